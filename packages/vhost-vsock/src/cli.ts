import { Command, InvalidArgumentError } from 'commander';
import { createVhostVsockBackend } from './backend.js';
import type { Logger } from './logger.js';

const levels = ['debug', 'info', 'warn', 'error'] as const;
type Level = (typeof levels)[number];

function stderrLogger(min: Level): Logger {
  const at = levels.indexOf(min);
  const out = (level: Level) => (obj: object, msg?: string) => {
    if (levels.indexOf(level) < at) return;
    const fields = Object.entries(obj)
      .map(([k, v]) => `${k}=${v instanceof Error ? v.message : JSON.stringify(v)}`)
      .join(' ');
    process.stderr.write(`${level}: ${msg ?? ''} ${fields}\n`);
  };
  return { debug: out('debug'), info: out('info'), warn: out('warn'), error: out('error') };
}

function u32(name: string, min: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!/^\d+$/.test(v) || n < min || n > 0xffff_ffff) {
      throw new InvalidArgumentError(`${name} must be an integer from ${min} to 4294967295`);
    }
    return n;
  };
}

const program = new Command('ee-vhost-vsock')
  .description(
    "vhost-user-vsock device backend: serve a QEMU guest's vsock (e.g. -M nitro-enclave,vsock=c) and bridge it to a vsock emulation folder",
  )
  .requiredOption(
    '--socket <path>',
    'vhost-user Unix socket to listen on (QEMU -chardev socket,path=...)',
  )
  .requiredOption('--cid <n>', 'guest CID (3 or above)', u32('--cid', 3))
  .option(
    '--vsock-dir <dir>',
    'vsock emulation folder to bridge to (default $ENCLAVE_EXTRAS_VSOCK_DIR)',
  )
  .option(
    '--host-cid <n>',
    'CID the guest sees for host-initiated connections',
    u32('--host-cid', 0),
    2,
  )
  .option(
    '--max-connections <n>',
    'most connections the guest may open at once (each holds a host socket); past it the guest gets RST',
    u32('--max-connections', 1),
    1024,
  )
  .option('--log-level <level>', 'debug, info, warn or error', 'info')
  .showHelpAfterError()
  .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2));

program.parse();
const opts = program.opts<{
  socket: string;
  cid: number;
  vsockDir?: string;
  hostCid: number;
  maxConnections: number;
  logLevel: string;
}>();
if (!levels.includes(opts.logLevel as Level)) {
  process.stderr.write(`error: --log-level must be one of ${levels.join(', ')}\n`);
  process.exit(2);
}
const vsockDir = opts.vsockDir ?? process.env.ENCLAVE_EXTRAS_VSOCK_DIR;
const logger = stderrLogger(opts.logLevel as Level);
const controller = new AbortController();
createVhostVsockBackend({
  socketPath: opts.socket,
  guestCid: opts.cid,
  vsockDir,
  hostCid: opts.hostCid,
  maxConnections: opts.maxConnections,
  logger,
  signal: controller.signal,
}).then(
  (backend) => {
    const stop = () => {
      void backend.close().then(() => process.exit(0));
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  },
  (err: Error) => {
    process.stderr.write(`ee-vhost-vsock: ${err.message}\n`);
    process.exit(1);
  },
);
