// request.signal in the worker. The main thread cancels a task by writing its
// slot (see lib/common/protocol.ts); a synchronous handler never yields to the
// event loop, so `signal.aborted` and `throwIfAborted()` read the slot
// themselves, and an async handler is woken by Atomics.waitAsync().
import { SlotState, type SlotTable } from '../lib/common/slots.js'

const abortedGetter = Object.getOwnPropertyDescriptor(AbortSignal.prototype, 'aborted')!.get!

export function createSignal (slots: SlotTable, slot: number): AbortSignal {
  const controller = new AbortController()
  const signal = controller.signal
  const poll = (): void => {
    if (abortedGetter.call(signal) === true) return
    const value = slots.state(slot)
    if (value === SlotState.Cancelled) {
      controller.abort(new DOMException('The client went away', 'AbortError'))
    } else if (value === SlotState.TimedOut) {
      controller.abort(new DOMException('The task timed out', 'TimeoutError'))
    }
  }
  Object.defineProperties(signal, {
    aborted: {
      get () {
        poll()
        return abortedGetter.call(signal)
      }
    },
    throwIfAborted: {
      value () {
        poll()
        AbortSignal.prototype.throwIfAborted.call(signal)
      }
    }
  })
  // Wakes when the main thread writes the slot (cancel, timeout, or release at
  // the task's end, which polls to nothing).
  const waiting = slots.waitWhile(slot, SlotState.Running)
  if (waiting.async) void waiting.value.then(poll)
  else poll()
  return signal
}
