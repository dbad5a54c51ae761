// The channels to one pool's threads (see lib/common/protocol.ts, "Sessions and
// channels"). The pool starts, replaces and ends threads; each thread that
// serves holds one session, the pool's only task, and through it a channel
// of ours. Tasks go out on a channel and outcomes come back on it, batched:
// what one turn of the event loop sends to a thread is one message, and so is
// what a thread finished in one of its turns.
import { MessageChannel, receiveMessageOnPort, type MessagePort, type Transferable } from 'node:worker_threads'
import type { PoolAdapter } from './pools/adapter.js'
import { PayloadKind, unknownMessage, type ChannelDown, type ChannelUp, type CheckOutcome, type CheckTask, type LogLine, type LogMessage, type Outcome, type Task } from './common/protocol.js'

/** Streams and uploads a thread holds while they wait for their clients, besides the task it runs. */
export const STREAMS_PER_THREAD = 16

/**
 * Short tasks a thread may be handed at once: the next ones wait on the
 * thread, not in a round trip to the main thread, and go out in one message.
 */
export const PIPELINE_DEPTH = 8

/** Threads in a row that may die before they are ready before the work waiting for one fails. */
const MAX_FAILED_STARTS = 3

/** Handler identities (`moduleUrl#n`) by number, the same numbers on every channel. */
export class HandlerNumbers {
  private readonly numbers = new Map<string, number>()
  readonly names: string[] = []

  numberOf (id: string): number {
    let n = this.numbers.get(id)
    if (n === undefined) {
      n = this.names.length
      this.names.push(id)
      this.numbers.set(id, n)
    }
    return n
  }
}

/** The numbers of every handler and task this process has sent to a thread. */
export const handlerNumbers = new HandlerNumbers()

/** Blocking routes' `config` (what can cross threads) by route number, sent once per channel like handler names. */
export const routeConfigs: unknown[] = []

/** One thread's channel, with what the scheduler counts on it. */
export class Channel {
  threadId = 0
  /** Tasks on it that run now (a stream waiting for its client does not). */
  running = 0
  /** Of those, tasks not known to be short: no task is queued behind them. */
  long = 0
  /** Streams and uploads it holds, waiting for their clients or not. */
  held = 0
  /** Slots (and tickets) sent on it whose outcome has not come back. */
  readonly pending = new Set<number>()
  /** Handler numbers this channel has been told the names of. */
  named = 0
  /** Route numbers this channel has been told the configs of. */
  configured = 0
  idleSince = performance.now()
  ready = false
  lost = false
  outbox: Task[] = []
  /** What each task of the outbox transfers (ports, moved bytes). */
  transfers: Array<Transferable[] | undefined> = []
  /** `port`: the channel; `logs`: the thread's log port, read only with receiveMessageOnPort (see LogMessage). */
  constructor (readonly port: MessagePort, readonly logs: MessagePort) {}
}

export interface ThreadsOptions {
  /** Sessions kept open however idle (the pool's minThreads). */
  min: number
  /** Sessions at most (maxThreads). */
  max: number
  /** ms a channel beyond `min` stays open without work before its thread is released. */
  idleTimeout: number
  /** Modules a thread imports before it takes work. */
  modules: () => string[]
  /** A task's outcome, or why it has none (its thread died or was released). */
  settle: (slot: number, outcome: Outcome | undefined, err: Error | undefined) => void
  /** A line the task in `slot` wrote (LogMessage), before its outcome. */
  line: (slot: number, line: LogLine) => void
  /** A thread can take work, or a thread was lost: the scheduler looks at its queues. */
  changed: () => void
  /** A thread ended before it could take work, and no other thread can: queued work cannot run. */
  startFailed: (err: Error) => void
  /** The thread runs at normal priority although a lower one was asked for: why. */
  priorityRefused: (why: string) => void
}

export class Threads {
  /** Channels that take work, in the order their threads became ready. */
  readonly channels: Channel[] = []
  private opening = 0
  private readonly dirty: Channel[] = []
  private flushScheduled = false
  private readonly tickets = new Map<number, { resolve: (value: CheckOutcome) => void, reject: (err: Error) => void }>()
  private nextTicket = -1
  private closed = false
  /** Why the last thread that died before it was ready died. */
  private startError: Error | undefined
  /** Sessions in a row whose thread died before it was ready. */
  private failedStarts = 0
  private readyWaiters: Array<() => void> = []
  private readonly idleTimer: NodeJS.Timeout | undefined
  private readonly flush = (): void => this.flushAll()

  constructor (readonly pool: PoolAdapter, private readonly options: ThreadsOptions) {
    if (options.idleTimeout > 0 && options.min < options.max) {
      this.idleTimer = setInterval(() => this.releaseIdle(), options.idleTimeout)
      this.idleTimer.unref()
    }
  }

  /** Sessions open or opening. */
  get sessions (): number {
    return this.channels.length + this.opening
  }

  /**
   * Opens sessions up to `count` (at most `max`), and resolves once that many
   * threads take work; rejects with the pool's error when none could start.
   */
  async start (count: number): Promise<void> {
    const wanted = Math.min(count, this.options.max)
    this.startError = undefined
    while (this.sessions < wanted) this.open()
    while (this.channels.length < wanted && this.opening > 0) {
      await new Promise<void>((resolve) => this.readyWaiters.push(resolve))
    }
    if (this.channels.length === 0 && this.startError !== undefined) throw this.startError
  }

  /** Starts one more session; its thread says when it is ready. */
  open (): void {
    if (this.closed || this.sessions >= this.options.max) return
    this.opening++
    const { port1, port2 } = new MessageChannel()
    const logs = new MessageChannel()
    const channel = new Channel(port1, logs.port1)
    port1.on('message', (message: ChannelUp) => this.receive(channel, message))
    // Held only while tasks are out (see post()): an idle pool never keeps the process alive.
    port1.unref()
    // Never listened on: lines are taken when their outcome comes (drainLogs()).
    logs.port1.unref()
    let session: Promise<unknown>
    try {
      session = this.pool.run({ type: 'blocking:session', port: port2, logs: logs.port2, modules: this.options.modules() }, [port2, logs.port2])
    } catch (err) {
      session = Promise.reject(err)
    }
    session.then(() => this.lose(channel, undefined), (err: Error) => this.lose(channel, err))
  }

  /**
   * Where a task goes: a thread that runs nothing (the one holding the fewest
   * streams), else, for a short task, the thread with the fewest short tasks
   * queued on it. Opens another session when every thread is busy.
   */
  place (stream: boolean, short: boolean): Channel | undefined {
    let idle: Channel | undefined
    let queued: Channel | undefined
    for (const channel of this.channels) {
      if (channel.running === 0) {
        if (stream && channel.held >= STREAMS_PER_THREAD) continue
        if (idle === undefined || channel.held < idle.held) idle = channel
      } else if (short && channel.long === 0 && channel.running < PIPELINE_DEPTH && (queued === undefined || channel.running < queued.running)) {
        queued = channel
      }
    }
    if (idle !== undefined) return idle
    if (this.sessions < this.options.max) this.open()
    return queued
  }

  /** Sends a task on a channel, with the next batch. */
  post (channel: Channel, task: Task, transfer?: Transferable[]): void {
    if (channel.pending.size === 0) channel.port.ref()
    channel.pending.add(task.slot)
    channel.outbox.push(task)
    channel.transfers.push(transfer)
    if (channel.outbox.length === 1) {
      this.dirty.push(channel)
      if (!this.flushScheduled) {
        this.flushScheduled = true
        setImmediate(this.flush)
      }
    }
  }

  /** Loads the handlers on one thread and says which cannot be found there (app.ready()). */
  check (fns: string[]): Promise<CheckOutcome> {
    const channel = this.channels[0]
    /* c8 ignore next */
    if (channel === undefined) return Promise.reject(new Error('fastify-blocking: no thread is ready for the startup check'))
    const task: CheckTask = { type: 'blocking:check', slot: this.nextTicket--, fns: fns.map((id) => handlerNumbers.numberOf(id)) }
    return new Promise((resolve, reject) => {
      this.tickets.set(task.slot, { resolve, reject })
      this.post(channel, task)
    })
  }

  private flushAll (): void {
    this.flushScheduled = false
    for (const channel of this.dirty) {
      const tasks = channel.outbox
      const transfers = channel.transfers
      channel.outbox = []
      channel.transfers = []
      if (channel.lost) continue
      const message: ChannelDown = { type: 'channel:tasks', tasks }
      this.name(channel, message)
      try {
        channel.port.postMessage(message, flatten(transfers))
      } catch {
        // A value in one of the tasks cannot be cloned: each goes alone, and
        // only the ones that cannot fail.
        unname(channel, message)
        this.postEach(channel, tasks, transfers)
      }
    }
    this.dirty.length = 0
  }

  /** Adds the names of handler numbers the channel has not been told yet. */
  private name (channel: Channel, message: ChannelDown & { type: 'channel:tasks' }): void {
    const { names } = handlerNumbers
    if (channel.configured < routeConfigs.length) {
      message.configsFrom = channel.configured
      message.configs = routeConfigs.slice(channel.configured)
      channel.configured = routeConfigs.length
    }
    if (channel.named === names.length) return
    message.from = channel.named
    message.names = names.slice(channel.named)
    channel.named = names.length
  }

  private postEach (channel: Channel, tasks: Task[], transfers: Array<Transferable[] | undefined>): void {
    for (let i = 0; i < tasks.length; i++) {
      const task = tasks[i]!
      const message: ChannelDown = { type: 'channel:tasks', tasks: [task] }
      this.name(channel, message)
      try {
        channel.port.postMessage(message, transfers[i])
      } catch (err) {
        unname(channel, message)
        this.done(channel, task.slot)
        this.deliver(task.slot, undefined, err as Error)
      }
    }
  }

  /**
   * Writes the lines the channel's thread has posted so far (LogMessage): a
   * task's lines were posted before its outcome, so they are all here when it
   * arrives, and go first.
   */
  drainLogs (channel: Channel): void {
    for (let m = receiveMessageOnPort(channel.logs); m !== undefined; m = receiveMessageOnPort(channel.logs)) {
      const [slot, line] = m.message as LogMessage
      this.options.line(slot, line)
    }
  }

  private receive (channel: Channel, message: ChannelUp): void {
    switch (message.type) {
      case 'channel:outcomes': {
        this.drainLogs(channel)
        const { outcomes } = message
        for (let i = 0; i < outcomes.length; i += 2) {
          const slot = outcomes[i] as number
          const outcome = outcomes[i + 1] as Outcome
          // A returned stream's task goes on until the stream ends (its second outcome).
          if (outcome.kind !== PayloadKind.Stream) this.done(channel, slot)
          this.deliver(slot, outcome, undefined)
        }
        break
      }
      case 'channel:ready':
        this.opening--
        this.failedStarts = 0
        channel.threadId = message.threadId
        channel.ready = true
        this.channels.push(channel)
        if (message.priorityRefused !== undefined) this.options.priorityRefused(message.priorityRefused)
        this.wakeReadyWaiters()
        this.options.changed()
        break
      default:
        // A bug on one side of the protocol: the thread goes, loudly.
        this.lose(channel, unknownMessage('channel (from a worker thread)', message))
        void this.pool.terminate(channel.threadId)
    }
  }

  private done (channel: Channel, slot: number): void {
    channel.pending.delete(slot)
    if (channel.pending.size === 0) {
      channel.port.unref()
      channel.idleSince = performance.now()
    }
  }

  private deliver (slot: number, outcome: Outcome | undefined, err: Error | undefined): void {
    if (slot >= 0) {
      this.options.settle(slot, outcome, err)
      return
    }
    const ticket = this.tickets.get(slot)
    this.tickets.delete(slot)
    if (err !== undefined) ticket?.reject(err)
    else ticket?.resolve(outcome as unknown as CheckOutcome)
  }

  /**
   * A session ended: its thread died (err), or was released. Whatever the
   * thread posted before is taken first; the tasks still out on it fail.
   */
  private lose (channel: Channel, err: Error | undefined): void {
    if (channel.lost) return
    // Lines first: those of a task whose thread was terminated have no outcome to go with.
    this.drainLogs(channel)
    for (let m = receiveMessageOnPort(channel.port); m !== undefined; m = receiveMessageOnPort(channel.port)) {
      this.receive(channel, m.message as ChannelUp)
    }
    channel.lost = true
    channel.port.close()
    channel.logs.close()
    if (channel.ready) {
      const i = this.channels.indexOf(channel)
      if (i !== -1) this.channels.splice(i, 1)
    } else {
      this.opening--
    }
    if (!channel.ready && err !== undefined) this.startError = err
    const why = err ?? new Error('the thread ended its session')
    for (const slot of channel.pending) this.deliver(slot, undefined, why)
    channel.pending.clear()
    if (this.closed) {
      this.wakeReadyWaiters()
      return
    }
    if (!channel.ready && err !== undefined) {
      // A session can land on a thread that is dying (the pool has not
      // removed it yet): it tries again. A thread that cannot start at all (a
      // module that kills it on import) would leave queued work waiting for
      // ever: after a few tries, that work fails, and the next task tries again.
      if (++this.failedStarts < MAX_FAILED_STARTS) {
        this.open()
        return
      }
      this.failedStarts = 0
      if (this.sessions === 0) {
        this.wakeReadyWaiters()
        this.options.startFailed(err)
        return
      }
    }
    if (this.sessions < this.options.min) this.open()
    this.wakeReadyWaiters()
    this.options.changed()
  }

  private wakeReadyWaiters (): void {
    const waiters = this.readyWaiters
    this.readyWaiters = []
    for (const wake of waiters) wake()
  }

  /** Threads beyond `min` that had no work for idleTimeout are handed back to the pool, which ends them after its own idleTimeout. */
  private releaseIdle (): void {
    const before = performance.now() - this.options.idleTimeout
    for (const channel of [...this.channels]) {
      if (this.channels.length <= this.options.min) break
      if (channel.pending.size > 0 || channel.idleSince > before) continue
      this.channels.splice(this.channels.indexOf(channel), 1)
      channel.ready = false
      this.opening++
      channel.port.postMessage({ type: 'channel:release' } satisfies ChannelDown)
    }
  }

  /** No more sessions; the pool's destroy() ends the threads, and with them their sessions. */
  close (): void {
    this.closed = true
    if (this.idleTimer !== undefined) clearInterval(this.idleTimer)
  }
}

/** A message that was not sent: its names and configs are still to be sent. */
function unname (channel: Channel, message: ChannelDown & { type: 'channel:tasks' }): void {
  channel.named = message.from ?? channel.named
  channel.configured = message.configsFrom ?? channel.configured
}

function flatten (transfers: Array<Transferable[] | undefined>): Transferable[] | undefined {
  let all: Transferable[] | undefined
  for (const list of transfers) if (list !== undefined) (all ??= []).push(...list)
  return all
}
