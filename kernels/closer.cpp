// A sampler that keeps grammar-constrained output completable within a
// token budget: it follows the grammar's state in a shadow copy, and near
// the end of the budget it allows only tokens after which the grammar's
// shortest completion still fits; when none does, it writes that shortest
// completion. A JSON answer cut by max_tokens thus still parses.
#include <algorithm>
#include <climits>
#include <cmath>
#include <new>
#include <string>
#include <vector>

#include "llama.h"
#include "llama-grammar.h"
#include "guard.h"

namespace {

constexpr int kInf = INT_MAX / 4;
// How far from the end of the budget (in characters of the shortest
// completion) candidates start being checked, and how many of the likeliest.
constexpr int kZone = 24;
constexpr size_t kTopK = 32;

struct closer {
    const llama_vocab * vocab = nullptr;
    llama_grammar * g = nullptr;
    llama_grammar_stacks initial;
    int budget = 0;
    int used = 0;
    std::vector<int> minlen;       // per rule: shortest match (kInf: none)
    std::vector<size_t> choice;    // per rule: offset of the alternative achieving it
    std::string pending;           // the rest of the completion being written
    int32_t closed = 0;            // set once the completion was written
};

bool is_char(const llama_grammar_element * pos) {
    return pos->type == LLAMA_GRETYPE_CHAR || pos->type == LLAMA_GRETYPE_CHAR_NOT || pos->type == LLAMA_GRETYPE_CHAR_ANY;
}

bool at_end(const llama_grammar_element * pos) { return pos->type == LLAMA_GRETYPE_END || pos->type == LLAMA_GRETYPE_ALT; }

// skip_char moves past one character class (with its ranges and alternates).
const llama_grammar_element * skip_char(const llama_grammar_element * pos) {
    do {
        pos += pos[1].type == LLAMA_GRETYPE_CHAR_RNG_UPPER ? 2 : 1;
    } while (pos->type == LLAMA_GRETYPE_CHAR_ALT);
    return pos;
}

bool match_char(const llama_grammar_element * pos, uint32_t chr) {
    bool found = false;
    const bool positive = pos->type == LLAMA_GRETYPE_CHAR || pos->type == LLAMA_GRETYPE_CHAR_ANY;
    do {
        if (pos[1].type == LLAMA_GRETYPE_CHAR_RNG_UPPER) {
            found = found || (pos->value <= chr && chr <= pos[1].value);
            pos += 2;
        } else if (pos->type == LLAMA_GRETYPE_CHAR_ANY) {
            found = true;
            pos += 1;
        } else {
            found = found || pos->value == chr;
            pos += 1;
        }
    } while (pos->type == LLAMA_GRETYPE_CHAR_ALT);
    return found == positive;
}

// pick is a character the class at pos matches, preferring plain ASCII.
uint32_t pick(const llama_grammar_element * pos) {
    if (pos->type == LLAMA_GRETYPE_CHAR) {
        return pos->value;
    }
    for (uint32_t c : std::u32string(U"a0 ebcdfghijklmnopqrstuvwxyz123456789")) {
        if (match_char(pos, c)) {
            return c;
        }
    }
    for (uint32_t c = 0x20; c < 0x3000; ++c) {
        if (match_char(pos, c)) {
            return c;
        }
    }
    return 0;
}

// seqlen is the shortest string matching the rest of an alternative.
int seqlen(const closer & c, const llama_grammar_element * pos) {
    long n = 0;
    while (!at_end(pos) && n < kInf) {
        if (is_char(pos)) {
            n += 1;
            pos = skip_char(pos);
        } else if (pos->type == LLAMA_GRETYPE_RULE_REF) {
            n += c.minlen[pos->value];
            pos += 1;
        } else {
            return kInf; // token elements: not ours to write
        }
    }
    return (int) std::min<long>(n, kInf);
}

void compute_minlen(closer & c) {
    const llama_grammar_rules & rules = c.g->rules;
    c.minlen.assign(rules.size(), kInf);
    c.choice.assign(rules.size(), 0);
    for (bool changed = true; changed;) {
        changed = false;
        for (size_t r = 0; r < rules.size(); ++r) {
            const llama_grammar_element * alt = rules[r].data();
            while (true) {
                const int n = seqlen(c, alt);
                if (n < c.minlen[r]) { // strictly shorter: choices never form a cycle
                    c.minlen[r] = n;
                    c.choice[r] = alt - rules[r].data();
                    changed = true;
                }
                const llama_grammar_element * p = alt;
                while (!at_end(p)) {
                    p = is_char(p) ? skip_char(p) : p + 1;
                }
                if (p->type == LLAMA_GRETYPE_END) {
                    break;
                }
                alt = p + 1;
            }
        }
    }
}

int closure_len(const closer & c, const llama_grammar_stack & st) {
    long n = 0;
    for (auto it = st.rbegin(); it != st.rend() && n < kInf; ++it) {
        n += seqlen(c, *it);
    }
    return (int) std::min<long>(n, kInf);
}

// shortest returns the length of the shortest completion over all stacks
// and which stack has it.
int shortest(const closer & c, const llama_grammar_stacks & stacks, size_t * which) {
    int best = kInf;
    for (size_t i = 0; i < stacks.size(); ++i) {
        const int n = closure_len(c, stacks[i]);
        if (n < best) {
            best = n;
            if (which) {
                *which = i;
            }
        }
    }
    return best;
}

void put_utf8(std::string & out, uint32_t cp) {
    if (cp < 0x80) {
        out += (char) cp;
    } else if (cp < 0x800) {
        out += (char) (0xC0 | (cp >> 6));
        out += (char) (0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += (char) (0xE0 | (cp >> 12));
        out += (char) (0x80 | ((cp >> 6) & 0x3F));
        out += (char) (0x80 | (cp & 0x3F));
    } else {
        out += (char) (0xF0 | (cp >> 18));
        out += (char) (0x80 | ((cp >> 12) & 0x3F));
        out += (char) (0x80 | ((cp >> 6) & 0x3F));
        out += (char) (0x80 | (cp & 0x3F));
    }
}

bool write_seq(const closer & c, const llama_grammar_element * pos, std::string & out, int depth) {
    if (depth > 4096) {
        return false;
    }
    for (; !at_end(pos);) {
        if (is_char(pos)) {
            const uint32_t ch = pick(pos);
            if (ch == 0) {
                return false;
            }
            put_utf8(out, ch);
            pos = skip_char(pos);
        } else if (pos->type == LLAMA_GRETYPE_RULE_REF) {
            const auto & rule = c.g->rules[pos->value];
            if (!write_seq(c, rule.data() + c.choice[pos->value], out, depth + 1)) {
                return false;
            }
            pos += 1;
        } else {
            return false;
        }
    }
    return true;
}

// decode turns a token's piece into code points; false when it ends in
// the middle of a character.
bool decode(const std::string & s, std::vector<uint32_t> & cps) {
    cps.clear();
    for (size_t i = 0; i < s.size();) {
        const unsigned char b = s[i];
        int n = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
        if (n == 0 || i + n > s.size()) {
            return false;
        }
        uint32_t cp = n == 1 ? b : b & (0x7F >> n);
        for (int k = 1; k < n; ++k) {
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        cps.push_back(cp);
        i += n;
    }
    return true;
}

std::string piece(const llama_vocab * vocab, llama_token tok) {
    char buf[256];
    const int n = llama_token_to_piece(vocab, tok, buf, sizeof(buf), 0, false);
    return n > 0 ? std::string(buf, n) : std::string();
}

// write_next leaves standing only the allowed token that spells the
// longest start of c.pending; false when none does.
bool write_next(closer & c, llama_token_data_array * cur) {
    size_t best = cur->size, best_len = 0;
    for (size_t i = 0; i < cur->size; ++i) {
        if (cur->data[i].logit == -INFINITY) {
            continue;
        }
        const std::string p = piece(c.vocab, cur->data[i].id);
        if (p.size() > best_len && c.pending.compare(0, p.size(), p) == 0) {
            best = i;
            best_len = p.size();
        }
    }
    if (best == cur->size) {
        c.pending.clear();
        return false;
    }
    for (size_t i = 0; i < cur->size; ++i) {
        if (i != best) {
            cur->data[i].logit = -INFINITY;
        }
    }
    return true;
}

const char * closer_name(const llama_sampler *) { return "llmrt-close-within"; }

void closer_accept(llama_sampler * smpl, llama_token tok) {
    closer & c = *static_cast<closer *>(smpl->ctx);
    c.used++;
    if (!c.pending.empty()) {
        const std::string p = piece(c.vocab, tok);
        if (!p.empty() && c.pending.compare(0, p.size(), p) == 0) {
            c.pending.erase(0, p.size());
        } else {
            c.pending.clear();
        }
    }
    if (!llama_vocab_is_eog(c.vocab, tok)) {
        llama_grammar_accept_impl(*c.g, tok);
    }
}

void closer_apply(llama_sampler * smpl, llama_token_data_array * cur) {
    closer & c = *static_cast<closer *>(smpl->ctx);
    const int left = c.budget - c.used;
    if (left <= 0) {
        return;
    }
    if (!c.pending.empty() && write_next(c, cur)) {
        return;
    }
    if (c.g->stacks.empty() || c.g->partial_utf8.n_remain > 0) {
        return;
    }
    size_t which = 0;
    const int need = shortest(c, c.g->stacks, &which);
    if (need >= kInf || left > need + kZone) {
        return;
    }
    // Near the end: keep the likeliest tokens after which the shortest
    // completion (in characters, at least its length in tokens) still fits.
    std::vector<size_t> idx;
    for (size_t i = 0; i < cur->size; ++i) {
        if (cur->data[i].logit != -INFINITY) {
            idx.push_back(i);
        }
    }
    const size_t k = std::min(kTopK, idx.size());
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                      [cur](size_t a, size_t b) { return cur->data[a].logit > cur->data[b].logit; });
    std::vector<bool> keep(cur->size, false);
    bool any = false;
    std::vector<uint32_t> cps;
    const llama_grammar_stacks saved = c.g->stacks;
    for (size_t j = 0; j < k; ++j) {
        const llama_token tok = cur->data[idx[j]].id;
        int after = kInf;
        if (llama_vocab_is_eog(c.vocab, tok)) {
            after = need == 0 ? 0 : kInf;
        } else if (decode(piece(c.vocab, tok), cps) && !cps.empty()) {
            for (uint32_t cp : cps) {
                llama_grammar_accept(c.g, cp);
                if (c.g->stacks.empty()) {
                    break;
                }
            }
            if (!c.g->stacks.empty()) {
                after = shortest(c, c.g->stacks, nullptr);
            }
            c.g->stacks = saved;
        }
        if (after <= left - 1) {
            keep[idx[j]] = true;
            any = true;
        }
    }
    if (any) {
        for (size_t i = 0; i < cur->size; ++i) {
            if (!keep[i]) {
                cur->data[i].logit = -INFINITY;
            }
        }
        return;
    }
    // Nothing fits: write the shortest completion.
    std::string text;
    const llama_grammar_stack & st = c.g->stacks[which];
    for (auto it = st.rbegin(); it != st.rend(); ++it) {
        if (!write_seq(c, *it, text, 0)) {
            return;
        }
    }
    c.pending = text;
    if (write_next(c, cur)) {
        c.closed = 1;
    }
}

void closer_reset(llama_sampler * smpl) {
    closer & c = *static_cast<closer *>(smpl->ctx);
    c.used = 0;
    c.pending.clear();
    c.closed = 0;
    c.g->stacks = c.initial;
    c.g->partial_utf8 = {0, 0};
}

void closer_free(llama_sampler * smpl) {
    closer * c = static_cast<closer *>(smpl->ctx);
    if (c->g) {
        llama_grammar_free_impl(c->g);
    }
    delete c;
}

llama_sampler * closer_clone(const llama_sampler * smpl);

const llama_sampler_i closer_iface = {
    /* .name   = */ closer_name,
    /* .accept = */ closer_accept,
    /* .apply  = */ closer_apply,
    /* .reset  = */ closer_reset,
    /* .clone  = */ closer_clone,
    /* .free   = */ closer_free,
};

llama_sampler * closer_clone(const llama_sampler * smpl) {
    const closer & src = *static_cast<const closer *>(smpl->ctx);
    closer * c = new (std::nothrow) closer(src);
    if (!c) {
        return nullptr;
    }
    c->g = llama_grammar_clone_impl(*src.g);
    return llama_sampler_init(&closer_iface, c);
}

} // namespace

extern "C" {

llama_sampler * llmrt_sampler_init_close_within(const llama_vocab * vocab, const char * grammar, int32_t budget, int32_t ** closed) {
    closer * c = nullptr;
    try {
        c = new closer();
        c->vocab = vocab;
        c->budget = budget;
        c->g = llama_grammar_init_impl(vocab, nullptr, grammar, "root", false, nullptr, 0, nullptr, 0);
        if (!c->g) {
            delete c;
            return nullptr;
        }
        c->initial = c->g->stacks;
        compute_minlen(*c);
        llama_sampler * s = llama_sampler_init(&closer_iface, c);
        *closed = &c->closed;
        return s;
    } catch (...) {
        if (c) {
            if (c->g) {
                llama_grammar_free_impl(c->g);
            }
            delete c;
        }
        return nullptr;
    }
}

} // extern "C"
