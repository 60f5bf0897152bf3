// chart.js draws the fleet summary as a grouped SVG bar chart: one group per
// template version, one bar per figure. Hand-written, no library; colours
// come from style.css (classes), so the CSP needs no inline styles.

const NS = 'http://www.w3.org/2000/svg';

function s(tag, attrs, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children) el.appendChild(typeof c === 'string' ? document.createTextNode(c) : c);
  return el;
}

/** niceMax rounds a maximum up to 1, 2 or 5 times a power of ten. */
function niceMax(v) {
  if (v <= 5) return 5;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return v;
}

/**
 * barChart returns an <svg>. groups: [{label, values: {key: number}}];
 * series: [{key, label}] in drawing order. Every bar carries data-group,
 * data-series and data-value, so tests and tooltips can read it.
 */
export function barChart(groups, series, title) {
  const bar = 14;
  const gap = 4;
  const groupGap = 26;
  const left = 40;
  const top = 12;
  const plotH = 180;
  const bottom = 56;
  const groupW = series.length * (bar + gap) - gap;
  const width = Math.max(360, left + groups.length * (groupW + groupGap) + groupGap);
  const height = top + plotH + bottom;
  const max = niceMax(Math.max(0, ...groups.flatMap((g) => series.map((x) => g.values[x.key] || 0))));
  const y = (v) => top + plotH - (plotH * v) / max;

  const svg = s('svg', {
    viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', class: 'chart', 'aria-label': title,
  }, s('title', null, title));

  // Axis and grid lines.
  for (let i = 0; i <= 5; i++) {
    const v = (max * i) / 5;
    svg.appendChild(s('line', { x1: left, x2: width - 8, y1: y(v), y2: y(v), class: 'grid' }));
    svg.appendChild(s('text', { x: left - 6, y: y(v) + 4, class: 'axis', 'text-anchor': 'end' }, String(Math.round(v * 10) / 10)));
  }

  groups.forEach((g, gi) => {
    const x0 = left + groupGap + gi * (groupW + groupGap);
    series.forEach((ser, si) => {
      const v = g.values[ser.key] || 0;
      const x = x0 + si * (bar + gap);
      const rect = s('rect', {
        x, y: y(v), width: bar, height: Math.max(0, top + plotH - y(v)),
        class: `bar ${ser.key}`, 'data-group': g.label, 'data-series': ser.key, 'data-value': v,
      }, s('title', null, `${g.label}: ${ser.label} ${v}`));
      svg.appendChild(rect);
    });
    const label = s('text', { x: x0 + groupW / 2, y: top + plotH + 16, class: 'label', 'text-anchor': 'middle' }, g.label);
    svg.appendChild(label);
  });

  // Legend.
  let lx = left;
  for (const ser of series) {
    svg.appendChild(s('rect', { x: lx, y: height - 18, width: 10, height: 10, class: `bar ${ser.key}` }));
    svg.appendChild(s('text', { x: lx + 14, y: height - 9, class: 'legend' }, ser.label));
    lx += 24 + ser.label.length * 7;
  }
  return svg;
}
