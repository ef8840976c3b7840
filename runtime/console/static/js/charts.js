// Charts drawn as inline SVG: a line chart (loss curves) and a scatter
// chart (accuracy against cost). Both scale to their container's width.

const NS = 'http://www.w3.org/2000/svg';
export const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#17becf', '#8c564b', '#e377c2'];

function s(tag, attrs, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const c of children) if (c !== null && c !== undefined) el.append(c);
  return el;
}

// ticks returns about n round values covering [lo, hi].
function ticks(lo, hi, n) {
  if (!(hi > lo)) { hi = lo + 1; }
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((x) => x >= raw) || 10 * mag;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
  return out;
}

function label(v) {
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(1);
  return String(+v.toPrecision(4));
}

// chartWidth fits the chart's drawing to a phone's screen, so that its
// text keeps a readable size when the SVG scales.
const chartWidth = () => Math.max(320, Math.min(640, window.innerWidth - 48));

function frame({ width = chartWidth(), height = 280, xMin, xMax, yMin, yMax, xLabel, yLabel, title, xInteger }) {
  const m = { l: 56, r: 16, t: title ? 28 : 12, b: 42 };
  const W = width - m.l - m.r;
  const H = height - m.t - m.b;
  const x = (v) => m.l + ((v - xMin) / (xMax - xMin || 1)) * W;
  const y = (v) => m.t + H - ((v - yMin) / (yMax - yMin || 1)) * H;
  const svg = s('svg', { viewBox: `0 0 ${width} ${height}`, class: 'chart', role: 'img', preserveAspectRatio: 'xMidYMid meet' });
  if (title) svg.append(s('text', { x: m.l, y: 18, class: 'chart-title' }, title));
  const axes = s('g', { class: 'axes' });
  for (const t of ticks(yMin, yMax, 5)) {
    if (t < yMin - 1e-12 || t > yMax + 1e-12) continue;
    axes.append(s('line', { x1: m.l, x2: m.l + W, y1: y(t), y2: y(t), class: 'grid' }));
    axes.append(s('text', { x: m.l - 6, y: y(t) + 4, 'text-anchor': 'end' }, label(t)));
  }
  for (const t of ticks(xMin, xMax, 6)) {
    if (t < xMin - 1e-12 || t > xMax + 1e-12 || (xInteger && !Number.isInteger(t))) continue;
    axes.append(s('line', { x1: x(t), x2: x(t), y1: m.t + H, y2: m.t + H + 4, class: 'tick' }));
    axes.append(s('text', { x: x(t), y: m.t + H + 16, 'text-anchor': 'middle' }, label(t)));
  }
  axes.append(s('line', { x1: m.l, x2: m.l + W, y1: m.t + H, y2: m.t + H, class: 'axis' }));
  axes.append(s('line', { x1: m.l, x2: m.l, y1: m.t, y2: m.t + H, class: 'axis' }));
  if (xLabel) axes.append(s('text', { x: m.l + W / 2, y: height - 6, 'text-anchor': 'middle', class: 'axis-label' }, xLabel));
  if (yLabel) axes.append(s('text', { x: 12, y: m.t + H / 2, 'text-anchor': 'middle', transform: `rotate(-90 12 ${m.t + H / 2})`, class: 'axis-label' }, yLabel));
  svg.append(axes);
  return { svg, x, y, m, W, H };
}

function extent(vals, pad) {
  let lo = Math.min(...vals);
  let hi = Math.max(...vals);
  if (!Number.isFinite(lo)) { lo = 0; hi = 1; }
  if (hi === lo) { const d = Math.abs(lo) * 0.1 || 1; lo -= d; hi += d; }
  const p = (hi - lo) * pad;
  return [lo - p, hi + p];
}

// lineChart draws series [{name, points: [[x, y], ...]}] with a legend.
export function lineChart({ series, xLabel, yLabel, title, desc }) {
  const all = series.flatMap((se) => se.points);
  const [xMin, xMax] = all.length ? [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))] : [0, 1];
  const [yMin, yMax] = extent(all.map((p) => p[1]), 0.05);
  const xInteger = all.every((p) => Number.isInteger(p[0]));
  const f = frame({ xMin, xMax: xMax > xMin ? xMax : xMin + 1, yMin: Math.max(0, yMin), yMax, xLabel, yLabel, title, xInteger });
  f.svg.setAttribute('aria-label', desc || title || 'line chart');
  series.forEach((se, i) => {
    const color = se.color || PALETTE[i % PALETTE.length];
    if (se.points.length > 1) {
      f.svg.append(s('polyline', { points: se.points.map((p) => `${f.x(p[0]).toFixed(1)},${f.y(p[1]).toFixed(1)}`).join(' '),
        fill: 'none', stroke: color, 'stroke-width': 2, class: 'series', 'data-series': se.name, 'data-points': se.points.length }));
    }
    for (const p of se.points.length <= 60 ? se.points : [se.points[se.points.length - 1]]) {
      f.svg.append(s('circle', { cx: f.x(p[0]), cy: f.y(p[1]), r: 2.5, fill: color }, s('title', {}, `${se.name}: step ${p[0]}, ${label(p[1])}`)));
    }
    // The legend sits in the top right corner, where a falling loss is not.
    f.svg.append(s('rect', { x: f.m.l + f.W - 120, y: f.m.t + 2 + i * 15, width: 10, height: 10, fill: color }));
    f.svg.append(s('text', { x: f.m.l + f.W - 106, y: f.m.t + 11 + i * 15, class: 'legend' }, se.name));
  });
  return f.svg;
}

// scatterChart draws labelled points [{x, y, label, group}]; points of one
// group share a colour and the legend lists the groups.
export function scatterChart({ points, xLabel, yLabel, title, desc }) {
  const [xMin, xMax] = extent(points.map((p) => p.x), 0.12);
  const [yMin, yMax] = extent(points.map((p) => p.y), 0.12);
  const f = frame({ xMin: Math.max(0, xMin), xMax, yMin: Math.max(0, yMin), yMax, xLabel, yLabel, title });
  f.svg.setAttribute('aria-label', desc || title || 'scatter chart');
  const groups = [...new Set(points.map((p) => p.group || ''))];
  for (const p of points) {
    const color = PALETTE[groups.indexOf(p.group || '') % PALETTE.length];
    const cx = f.x(p.x);
    const cy = f.y(p.y);
    f.svg.append(s('circle', { cx, cy, r: 5, fill: color, class: 'point', 'data-label': p.label },
      s('title', {}, `${p.group ? p.group + ' ' : ''}${p.label}: ${yLabel} ${label(p.y)}, ${xLabel} ${label(p.x)}`)));
    // Labels near the right edge go to the left of their point.
    const left = cx > f.m.l + f.W * 0.75;
    f.svg.append(s('text', { x: left ? cx - 8 : cx + 8, y: cy - 6, 'text-anchor': left ? 'end' : 'start', class: 'point-label' }, p.label));
  }
  if (groups.length > 1) {
    groups.forEach((g, i) => {
      f.svg.append(s('rect', { x: f.m.l + 8, y: f.m.t + 2 + i * 15, width: 10, height: 10, fill: PALETTE[i % PALETTE.length] }));
      f.svg.append(s('text', { x: f.m.l + 22, y: f.m.t + 11 + i * 15, class: 'legend' }, g));
    });
  }
  return f.svg;
}
