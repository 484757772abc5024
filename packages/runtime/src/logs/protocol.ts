// The log service's wire format (the enclave sends, ee-parent reads; one direction only).
//
//   frame   := u32 length | u8 type | body          (big-endian; length counts type + body)
//   HELLO   (1) := u8 version=1 | JSON {"pid":N,"started":"ISO time"}    first frame, once
//   RECORD  (2) := u8 stream | u8 flags | u64 seq | u64 timeNs | line bytes (no newline)
//   DROPPED (3) := u64 firstSeq | u64 lastSeq | u32 runtime | u32 stdout | u32 stderr
//   METRICS (4) := Prometheus text (the enclave's metrics, latest wins)
//
// stream: 0 runtime (ee-enclave's own JSON log lines), 1 the app's stdout, 2 its stderr.
// flags: bit 0 = partial (a line longer than maxLineBytes, continued in the next record).
// seq: one counter for all three streams, from 1, assigned when a line is read, so the parent
// can put the streams back in order. A DROPPED frame stands for exactly the records
// firstSeq..lastSeq (none of them is ever sent), with the count per stream.
// timeNs: the enclave's CLOCK_REALTIME when the line was read, ns since the Unix epoch.
import { RuntimeError } from '../errors.js';

export const FRAME_HELLO = 1;
export const FRAME_RECORD = 2;
export const FRAME_DROPPED = 3;
export const FRAME_METRICS = 4;
export const LOG_PROTOCOL_VERSION = 1;
/** The largest frame a reader accepts (length field). */
export const MAX_FRAME_BYTES = 1024 * 1024;
/** Bytes of a RECORD frame besides the line. */
export const RECORD_OVERHEAD = 4 + 1 + 1 + 1 + 8 + 8;

export const STREAMS = ['runtime', 'stdout', 'stderr'] as const;
export type LogStream = (typeof STREAMS)[number];

export function encodeHello(info: { pid: number; started: string }): Buffer {
  const json = Buffer.from(JSON.stringify(info), 'utf8');
  const b = Buffer.alloc(4 + 1 + 1 + json.length);
  b.writeUInt32BE(2 + json.length, 0);
  b[4] = FRAME_HELLO;
  b[5] = LOG_PROTOCOL_VERSION;
  json.copy(b, 6);
  return b;
}

export function encodeRecord(
  stream: LogStream,
  partial: boolean,
  seq: bigint,
  timeNs: bigint,
  line: Buffer,
): Buffer {
  const b = Buffer.allocUnsafe(RECORD_OVERHEAD + line.length);
  b.writeUInt32BE(RECORD_OVERHEAD - 4 + line.length, 0);
  b[4] = FRAME_RECORD;
  b[5] = STREAMS.indexOf(stream);
  b[6] = partial ? 1 : 0;
  b.writeBigUInt64BE(seq, 7);
  b.writeBigUInt64BE(timeNs, 15);
  line.copy(b, RECORD_OVERHEAD);
  return b;
}

export interface DroppedRun {
  firstSeq: bigint;
  lastSeq: bigint;
  counts: Record<LogStream, number>;
}

export function encodeDropped(d: DroppedRun): Buffer {
  const b = Buffer.alloc(4 + 1 + 16 + 12);
  b.writeUInt32BE(b.length - 4, 0);
  b[4] = FRAME_DROPPED;
  b.writeBigUInt64BE(d.firstSeq, 5);
  b.writeBigUInt64BE(d.lastSeq, 13);
  b.writeUInt32BE(Math.min(d.counts.runtime, 0xffff_ffff), 21);
  b.writeUInt32BE(Math.min(d.counts.stdout, 0xffff_ffff), 25);
  b.writeUInt32BE(Math.min(d.counts.stderr, 0xffff_ffff), 29);
  return b;
}

export function encodeMetrics(text: string): Buffer {
  const body = Buffer.from(text, 'utf8');
  const b = Buffer.alloc(5 + body.length);
  b.writeUInt32BE(1 + body.length, 0);
  b[4] = FRAME_METRICS;
  body.copy(b, 5);
  return b;
}

export type LogFrame =
  | { type: 'hello'; version: number; info: Record<string, unknown> }
  | {
      type: 'record';
      stream: LogStream;
      partial: boolean;
      seq: bigint;
      timeNs: bigint;
      line: Buffer;
    }
  | ({ type: 'dropped' } & DroppedRun)
  | { type: 'metrics'; text: string };

function bad(what: string): RuntimeError {
  return new RuntimeError(
    'ERR_RUNTIME_LOGS_PROTOCOL',
    `A log frame is malformed: ${what}. The peer does not speak the ee-enclave log protocol v1 (check logs.parent / logs.listen).`,
  );
}

/**
 * Splits a byte stream into frames. `push` returns the complete frames; it throws
 * ERR_RUNTIME_LOGS_PROTOCOL on a length above maxFrameBytes, an unknown type or a short body,
 * after which the connection must be closed.
 */
export class LogFrameDecoder {
  private buf: Buffer = Buffer.alloc(0);

  constructor(private readonly maxFrameBytes = MAX_FRAME_BYTES) {}

  /** Bytes held for an incomplete frame. */
  get buffered(): number {
    return this.buf.length;
  }

  push(chunk: Buffer): LogFrame[] {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const out: LogFrame[] = [];
    let off = 0;
    while (this.buf.length - off >= 4) {
      const len = this.buf.readUInt32BE(off);
      if (len < 1 || len > this.maxFrameBytes)
        throw bad(`length ${len} (1..${this.maxFrameBytes})`);
      if (this.buf.length - off - 4 < len) break;
      out.push(decodeBody(this.buf.subarray(off + 4, off + 4 + len)));
      off += 4 + len;
    }
    this.buf = off === 0 ? this.buf : this.buf.subarray(off);
    if (this.buf.length === 0) this.buf = Buffer.alloc(0);
    return out;
  }
}

function decodeBody(body: Buffer): LogFrame {
  const type = body[0];
  switch (type) {
    case FRAME_HELLO: {
      if (body.length < 2) throw bad('short HELLO');
      let info: unknown;
      try {
        info = JSON.parse(body.subarray(2).toString('utf8'));
      } catch {
        throw bad('HELLO is not JSON');
      }
      if (typeof info !== 'object' || info === null || Array.isArray(info)) {
        throw bad('HELLO is not a JSON object');
      }
      return { type: 'hello', version: body[1] as number, info: info as Record<string, unknown> };
    }
    case FRAME_RECORD: {
      if (body.length < RECORD_OVERHEAD - 4) throw bad('short RECORD');
      const stream = STREAMS[body[1] as number];
      if (!stream) throw bad(`unknown stream ${body[1]}`);
      return {
        type: 'record',
        stream,
        partial: ((body[2] as number) & 1) === 1,
        seq: body.readBigUInt64BE(3),
        timeNs: body.readBigUInt64BE(11),
        // a copy: the decoder's buffer is reused
        line: Buffer.from(body.subarray(19)),
      };
    }
    case FRAME_DROPPED: {
      if (body.length !== 29) throw bad('DROPPED is not 29 bytes');
      return {
        type: 'dropped',
        firstSeq: body.readBigUInt64BE(1),
        lastSeq: body.readBigUInt64BE(9),
        counts: {
          runtime: body.readUInt32BE(17),
          stdout: body.readUInt32BE(21),
          stderr: body.readUInt32BE(25),
        },
      };
    }
    case FRAME_METRICS:
      return { type: 'metrics', text: body.subarray(1).toString('utf8') };
    default:
      throw bad(`unknown frame type ${type}`);
  }
}
