// The backend's fds (the vhost-user socket, kick and call eventfds) are watched with koffi's
// uv_poll; their handlers must run like any Node I/O callback: the nextTicks and promise jobs
// they queue run before the next macrotask. Node 26.4+ no longer drains those queues after a
// native addon calls into JS outside a callback scope (how koffi runs poll callbacks), which
// stalled the vhost-user handshake and the data path (backend.test.ts timed out on Node 26).
import { afterEach, describe, expect, it } from 'vitest';
import {
  closeFd,
  newEventFd,
  readEventFd,
  signalEventFd,
  type Watch,
  watchReadable,
} from '../src/native.js';

describe('watchReadable', () => {
  const cleanup: (() => void)[] = [];
  afterEach(() => {
    for (const f of cleanup.splice(0).reverse()) f();
  });

  it('runs the handler as an I/O callback: its ticks and promise jobs run before the next macrotask', async () => {
    const fd = newEventFd();
    cleanup.push(() => closeFd(fd));
    const order: string[] = [];
    let rounds = 0;
    const done = new Promise<void>((ok) => {
      const w: Watch = watchReadable(fd, () => {
        readEventFd(fd);
        rounds++;
        const r = rounds;
        process.nextTick(() => order.push(`tick${r}`));
        queueMicrotask(() => order.push(`microtask${r}`));
        setImmediate(() => {
          order.push(`immediate${r}`);
          if (r < 3) signalEventFd(fd);
          else ok();
        });
      });
      cleanup.push(() => w.close());
    });
    signalEventFd(fd);
    await done;
    expect(order).toEqual([
      'tick1',
      'microtask1',
      'immediate1',
      'tick2',
      'microtask2',
      'immediate2',
      'tick3',
      'microtask3',
      'immediate3',
    ]);
  });

  it('close() also drops a readiness already reported but not yet handled', async () => {
    // two eventfds ready in the same poll phase: whichever handler runs first closes the other
    // watch, whose handler then must not run
    const a = newEventFd();
    const b = newEventFd();
    cleanup.push(
      () => closeFd(a),
      () => closeFd(b),
    );
    const calls: string[] = [];
    const watches: Record<string, Watch> = {};
    for (const [name, fd, other] of [
      ['a', a, 'b'],
      ['b', b, 'a'],
    ] as const) {
      watches[name] = watchReadable(fd, () => {
        calls.push(name);
        readEventFd(fd);
        watches[other]?.close();
      });
      cleanup.push(() => watches[name]?.close());
    }
    signalEventFd(a);
    signalEventFd(b);
    await new Promise((r) => setTimeout(r, 50));
    expect(calls).toHaveLength(1);
  });
});
