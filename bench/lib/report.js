// Numbers to text: medians with their spread, ratios of runs made side by
// side, targets, markdown tables. Shared by every scenario's render().

export function median (values) {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

function summary (values) {
  return { median: median(values), min: Math.min(...values), max: Math.max(...values) }
}

/** { median, min, max } of `pick(run)` over the runs of one contender. */
export function spread (runs, pick) {
  return summary(runs.map(pick))
}

/**
 * `combine(runOfA, runOfB)` for each round in which a and b both ran (one
 * right after the other, so that a slow minute of a shared machine weighs on
 * both), as { median, min, max }.
 */
export function paired (runs, a, b, combine) {
  const values = []
  for (const run of byContender(runs, a)) {
    const other = runs.find((r) => r.contender === b && r.rep === run.rep)
    if (other !== undefined) values.push(combine(run, other))
  }
  return summary(values)
}

/** pick(a) / pick(b), round by round. */
export function ratio (runs, a, b, pick) {
  return paired(runs, a, b, (x, y) => pick(x) / pick(y))
}

/** pick(a) - pick(b), round by round. */
export function difference (runs, a, b, pick) {
  return paired(runs, a, b, (x, y) => pick(x) - pick(y))
}

export function byContender (runs, contender) {
  return runs.filter((r) => r.contender === contender)
}

/** 1234.5 -> '1,235'; 12.345 -> '12.3'; 0.1234 -> '0.12' */
export function num (value) {
  if (!Number.isFinite(value)) return 'n/a'
  const abs = Math.abs(value)
  const digits = abs >= 100 ? 0 : abs >= 10 ? 1 : 2
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
}

/** A median with its range: '12.3 (11.9–13.0)'; one run prints alone. */
export function withSpread ({ median, min, max }, format = num) {
  return min === max ? format(median) : `${format(median)} (${format(min)}–${format(max)})`
}

/** plural(1, 'run') -> '1 run'; plural(3, 'run') -> '3 runs' */
export function plural (n, word) {
  return `${n} ${word}${n === 1 ? '' : 's'}`
}

export function times (value) {
  return `${num(value)}x`
}

/**
 * One row per contender: its label, then for each column the median and
 * range of column(run) (or of column[0](run), shown with column[1]).
 */
export function contenderRows (runs, contenders, labels, columns) {
  return contenders.map((c) => {
    const mine = byContender(runs, c)
    return [labels[c], ...columns.map((col) => (Array.isArray(col) ? withSpread(spread(mine, col[0]), col[1]) : withSpread(spread(mine, col))))]
  })
}

/** A sentence on other processes' CPU during a contender's runs, when it was enough to matter; else ''. */
export function busyNote (runs, contender, above = 0.3) {
  const other = spread(byContender(runs, contender), (r) => r.cpu.other).median
  return other > above ? ` Besides, other processes of the shared machine took a median ${num(other)} cores during these runs.` : ''
}

/** A sentence on failed requests (errors, timeouts, non-2xx answers). */
export function failures (runs, labels) {
  const failed = runs.filter((r) => r.errors + r.non2xx > 0)
  if (failed.length === 0) return 'No request failed or got a non-2xx answer.'
  return 'Failed or non-2xx requests: ' + failed.map((r) => `${labels[r.contender]} round ${r.rep}: ${r.errors + r.non2xx}`).join('; ') + '.'
}

export function table (header, rows) {
  const line = (cells) => `| ${cells.join(' | ')} |`
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n')
}

/**
 * A target: `measured` is a { median, min, max }; it passes when the median
 * satisfies `test`. `limit` says what holds the number back, shown on a miss.
 */
export function target ({ what, goal, measured, test, format = num, limit }) {
  return { what, goal, measured: withSpread(measured, format), pass: test(measured.median), limit }
}

export function targetsTable (targets) {
  const rows = targets.map((t) => [t.what, t.goal, t.measured, t.pass ? '**PASS**' : '**MISS**'])
  const misses = new Map() // limit -> the targets it explains
  for (const t of targets.filter((t) => !t.pass && t.limit !== undefined)) misses.set(t.limit, [...(misses.get(t.limit) ?? []), t.what])
  const why = [...misses].map(([limit, whats]) => `- MISS, ${whats.join('; ')}: ${limit}`).join('\n')
  return table(['target', 'goal', 'measured: median (range)', 'verdict'], rows) + (why === '' ? '' : `\n\n${why}`)
}
