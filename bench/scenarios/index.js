// The scenarios, in the order the report shows them. A scenario is a module
// exporting:
//   id, title       'event-loop', 'Event-loop protection'
//   defaults        { warmup, duration } in seconds
//   run(ctx)        measures; resolves to what render() needs (JSON-safe)
//   render(result)  a markdown section, with its targets marked PASS or MISS
// ctx (see bench/run.js): { reps, warmup, duration, threads, iterations,
// rounds(contenders, measureOne), log }; measureOne(server, contender).
// defaults may also give `reps`, the rounds run.js makes unless told (else 5),
// and `extraRounds`, the rounds it adds at most for disturbed ones (else 2);
// rounds() takes { server, env } for a server file other than server.js.
// Streaming, background tasks and multipart get a module each here.
import * as eventLoop from './event-loop.js'
import * as overhead from './overhead.js'
import * as stream from './stream.js'
import * as background from './background.js'
import * as multipart from './multipart.js'
import * as priority from './priority.js'
import * as detect from './detect.js'
import * as cold from './cold.js'

export const scenarios = [eventLoop, overhead]
scenarios.push(stream, background, multipart, priority, detect, cold)
