// A line chart as a standalone SVG, written by hand (no dependencies), for
// docs/: time on x, a latency on y (log scale), one line per series, a legend
// and optional dashed reference lines. It draws its own white background and
// dark text, so it reads the same in GitHub's light and dark modes.

const esc = (s) => String(s).replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;').replaceAll('"', '&quot;')
const fixed = (n) => Number(n.toFixed(1))

/** 0.1 -> '0.1', 1 -> '1', 1000 -> '1,000' */
function tickLabel (v) {
  return v >= 1 ? v.toLocaleString('en-US') : String(v)
}

/**
 * series: [{ label, color, dash?, points: [[x, y | null], ...] }] (a null y
 * breaks the line). y is drawn on a log scale from yMin to yMax (powers of
 * ten); values outside are clipped to the edge. x from 0 to xMax, a tick every
 * xStep. yMax undefined: the power of ten above the largest value (at least
 * 1000). refs: [{ y, label }] drawn as dashed horizontal lines.
 */
export function lineChart ({ title, subtitle, series, xMax, xStep, xLabel, yLabel, yMin = 0.1, yMax, refs = [], width = 860, height = 420 }) {
  const left = 70
  const right = 20
  const top = subtitle === undefined ? 44 : 62
  const legendRows = Math.ceil(series.length / 2)
  const bottom = 58 + legendRows * 20
  const plotW = width - left - right
  const plotH = height - top - bottom
  const largest = Math.max(0, ...series.flatMap((s) => s.points.map(([, v]) => v ?? 0)))
  yMax ??= 10 ** Math.max(3, Math.ceil(Math.log10(largest)))
  const lo = Math.log10(yMin)
  const hi = Math.log10(yMax)
  const x = (v) => left + (v / xMax) * plotW
  const y = (v) => top + plotH - ((Math.log10(Math.min(yMax, Math.max(yMin, v))) - lo) / (hi - lo)) * plotH
  const out = []
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="-apple-system, 'Segoe UI', Helvetica, Arial, sans-serif" font-size="13">`)
  out.push(`<title>${esc(title)}</title>`)
  out.push(`<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`)
  out.push(`<text x="${left}" y="24" font-size="16" font-weight="600" fill="#1f2328">${esc(title)}</text>`)
  if (subtitle !== undefined) out.push(`<text x="${left}" y="44" fill="#59636e">${esc(subtitle)}</text>`)
  // Grid and y ticks: every power of ten, with faint lines at 2x and 5x.
  for (let e = Math.round(lo); e <= Math.round(hi); e++) {
    const v = 10 ** e
    out.push(`<line x1="${left}" x2="${left + plotW}" y1="${fixed(y(v))}" y2="${fixed(y(v))}" stroke="#d1d9e0"/>`)
    out.push(`<text x="${left - 8}" y="${fixed(y(v) + 4)}" text-anchor="end" fill="#1f2328">${tickLabel(Number(v.toPrecision(1)))}</text>`)
    for (const m of [2, 5]) {
      if (e < Math.round(hi)) out.push(`<line x1="${left}" x2="${left + plotW}" y1="${fixed(y(m * v))}" y2="${fixed(y(m * v))}" stroke="#eef1f4"/>`)
    }
  }
  for (let t = 0; t <= xMax + 1e-9; t += xStep) {
    out.push(`<line x1="${fixed(x(t))}" x2="${fixed(x(t))}" y1="${top}" y2="${top + plotH}" stroke="#eef1f4"/>`)
    out.push(`<text x="${fixed(x(t))}" y="${top + plotH + 18}" text-anchor="middle" fill="#1f2328">${Number(t.toFixed(3))}</text>`)
  }
  out.push(`<rect x="${left}" y="${top}" width="${plotW}" height="${plotH}" fill="none" stroke="#59636e"/>`)
  out.push(`<text x="${left + plotW / 2}" y="${top + plotH + 38}" text-anchor="middle" fill="#1f2328">${esc(xLabel)}</text>`)
  out.push(`<text transform="translate(18 ${top + plotH / 2}) rotate(-90)" text-anchor="middle" fill="#1f2328">${esc(yLabel)}</text>`)
  // The lines, each broken where a point is missing.
  for (const s of series) {
    const paths = []
    let current = []
    for (const [px, py] of s.points) {
      if (py === null || py === undefined || px > xMax) {
        if (current.length > 0) paths.push(current)
        current = []
      } else {
        current.push(`${fixed(x(px))},${fixed(y(py))}`)
      }
    }
    if (current.length > 0) paths.push(current)
    const dash = s.dash === undefined ? '' : ` stroke-dasharray="${s.dash}"`
    out.push(`<g fill="none" stroke="${s.color}" stroke-width="1.6" stroke-linejoin="round"${dash}>`)
    for (const p of paths) out.push(p.length === 1 ? `<circle cx="${p[0].split(',')[0]}" cy="${p[0].split(',')[1]}" r="1.5" fill="${s.color}"/>` : `<polyline points="${p.join(' ')}"/>`)
    out.push('</g>')
  }
  for (const ref of refs) {
    out.push(`<line x1="${left}" x2="${left + plotW}" y1="${fixed(y(ref.y))}" y2="${fixed(y(ref.y))}" stroke="#1f2328" stroke-dasharray="6 4" stroke-width="1.2"/>`)
    out.push(`<text x="${left + 8}" y="${fixed(y(ref.y) - 6)}" fill="#1f2328" font-size="12" stroke="#ffffff" stroke-width="4" stroke-linejoin="round" paint-order="stroke">${esc(ref.label)}</text>`)
  }
  // Legend, two columns under the x label.
  series.forEach((s, i) => {
    const lx = left + (i % 2) * (plotW / 2)
    const ly = top + plotH + 62 + Math.floor(i / 2) * 20
    const dash = s.dash === undefined ? '' : ` stroke-dasharray="${s.dash}"`
    out.push(`<line x1="${lx}" x2="${lx + 26}" y1="${ly - 4}" y2="${ly - 4}" stroke="${s.color}" stroke-width="3"${dash}/>`)
    out.push(`<text x="${lx + 34}" y="${ly}" fill="#1f2328">${esc(s.label)}</text>`)
  })
  out.push('</svg>')
  return out.join('\n') + '\n'
}
