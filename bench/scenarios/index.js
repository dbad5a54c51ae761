// The scenarios, in the order the report shows them. A scenario is a module
// exporting:
//   id, title       'event-loop', 'Event-loop protection'
//   defaults        { warmup, duration } in seconds
//   run(ctx)        measures; resolves to what render() needs (JSON-safe)
//   render(result)  a markdown section, with its targets marked PASS or MISS
// ctx (see bench/run.js): { reps, warmup, duration, threads, iterations,
// rounds(contenders, measureOne), log }.
// Streaming, background tasks and multipart get a module each here.
import * as eventLoop from './event-loop.js'
import * as overhead from './overhead.js'

export const scenarios = [eventLoop, overhead]
