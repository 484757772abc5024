#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { version } from '../package.json';
import { serveSimulator } from './daemon.js';
import { NsmSimulator } from './simulator.js';
import type { Logger } from './transport.js';

const USAGE = `nsm-simulator: serve a simulated Nitro Secure Module over a Unix socket

usage: nsm-simulator --socket PATH [--state-dir DIR] [--module-id ID]
                     [--pcr N=HEX]... [--verbose]
       nsm-simulator --print-root --state-dir DIR

  --socket PATH     Unix socket to listen on (clients: socketTransport(PATH))
  --state-dir DIR   keep the development CA here (default: in memory, new each
                    start)
  --module-id ID    module_id reported by DescribeNSM and documents
  --pcr N=HEX       initial value of PCR N (96 hex digits); repeatable
  --print-root      print the dev root certificate (PEM) of --state-dir and exit
  --verbose         log JSON lines to stderr
  --version         print the version and exit
  -h, --help        print this help and exit
`;

function jsonLogger(minLevel: number): Logger {
  const line = (level: string, n: number) => (obj: object, msg?: string) => {
    if (n < minLevel) return;
    const clean = JSON.stringify({ time: Date.now(), level, msg, ...obj }, (_k, v: unknown) =>
      v instanceof Error ? { message: v.message, code: (v as { code?: unknown }).code } : v,
    );
    process.stderr.write(`${clean}\n`);
  };
  return {
    debug: line('debug', 20),
    info: line('info', 30),
    warn: line('warn', 40),
    error: line('error', 50),
  };
}

/** The apps' one usage-error line: `nsm-simulator: ERR_USAGE: <message>` on stderr, exit 2. */
function usage(message: string): number {
  process.stderr.write(`nsm-simulator: ERR_USAGE: ${message}\n`);
  return 2;
}

async function main(): Promise<number> {
  let args: ReturnType<typeof parse>;
  try {
    args = parse();
  } catch (err) {
    return usage((err as Error).message);
  }
  const v = args.values;
  if (v.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (v.version) {
    process.stdout.write(`${version}\n`);
    return 0;
  }
  const pcrs: Record<number, string> = {};
  for (const p of v.pcr ?? []) {
    const m = /^(\d+)=([0-9a-fA-F]+)$/.exec(p);
    if (!m) {
      return usage(`--pcr ${p}: expected N=HEX`);
    }
    pcrs[Number(m[1])] = m[2]!;
  }
  const logger = jsonLogger(v.verbose ? 20 : 30);
  let simulator: NsmSimulator;
  try {
    simulator = new NsmSimulator({
      stateDir: v['state-dir'],
      moduleId: v['module-id'],
      pcrs,
      logger,
    });
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    process.stderr.write(
      `nsm-simulator: ${typeof code === 'string' ? code : 'ERR_USAGE'}: ${(err as Error).message}\n`,
    );
    return 2;
  }
  if (v['print-root']) {
    process.stdout.write((await simulator.devRoot()).pem);
    return 0;
  }
  if (!v.socket) {
    return usage('--socket PATH is required (or --print-root, --help, --version)');
  }
  const server = await serveSimulator({ socketPath: v.socket, simulator, logger });
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await server.close();
  return 0;
}

function parse() {
  return parseArgs({
    options: {
      socket: { type: 'string' },
      'state-dir': { type: 'string' },
      'module-id': { type: 'string' },
      pcr: { type: 'string', multiple: true },
      'print-root': { type: 'boolean' },
      verbose: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean' },
    },
  });
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`nsm-simulator: ${(err as Error)?.message ?? String(err)}\n`);
    process.exitCode = 1;
  },
);
