package main

import (
	"math/rand/v2"
	"strings"
)

// words are common English words that are one token each, with their
// leading space, in the GPT-2, Llama 3, Qwen 2 and Mistral tokenizers; a
// prompt of n of them is close to n tokens there (tiny-vocabulary models
// split them, which is why the server's own count is printed).
var words = strings.Fields(`
the of and to in is was for on that with as it at by from his he be this
are or had not but which have one were they you all her she there been
their has when who will more no if out so said what up its about into than
them can only other new some could time these two may then do first any my
now such like our over man me even most made after also did many before
must through back years where much your way well down should because each
just those people how too little state good very make world still own see
men work long get here between both life being under never day same
another know while last might us great old year off come since against go
came right used take three states himself few house use during without
again place around however home small found thought went say part once
general high upon school every don does got united left number course war
until always away something fact though water less public put think almost
hand enough far took head yet government system better set told nothing
night end why called eyes find going look asked later knew point next
city business give group toward young let room president side social given
present several order national possible rather second face per among form
important often things looking early white case john become large big need
four within felt along children saw best church ever least power development
light thing seemed family interest want members mind country area others
done turned although open god service certain kind problem began different
door thus help sense means whole matter perhaps itself york times law human
line above name example action company hands local show whether five history
gave today either act feet across taken past quite anything seen having
death week experience body word half really field am car words already
themselves information tell college shall money period held keep sure free
`)

// promptText returns n words drawn deterministically from words by seed,
// capitalised and ended like sentences so that chat templates and
// tokenizers see ordinary text.
func promptText(seed uint64, n int) string {
	r := rand.New(rand.NewPCG(seed, 0x6c6f616467656e)) // "loadgen"
	var b strings.Builder
	sentence := 0
	for i := range n {
		w := words[r.IntN(len(words))]
		if sentence == 0 {
			w = strings.ToUpper(w[:1]) + w[1:]
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(w)
		sentence++
		if sentence >= 8+r.IntN(8) || i == n-1 {
			b.WriteByte('.')
			sentence = 0
		}
	}
	return b.String()
}

// prompt returns the prompt of the request with the given seed: n words
// unique to it, or with shared a prefix common to every request (drawn from
// base) followed by a short unique tail, so that a server's prefix cache can
// reuse the prefix.
func prompt(base, seed uint64, n int, shared bool) string {
	if !shared || n < 2 {
		return promptText(seed, n)
	}
	tail := min(8, n/2)
	return promptText(base, n-tail) + " " + promptText(seed, tail)
}
