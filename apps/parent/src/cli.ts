#!/usr/bin/env node
// ee-parent: parses flags and config, then composes the @enclave-extras packages.
// Each subcommand lives in src/commands/<name>.ts and exports register(program).
// Exit codes: 0 ok, 1 runtime failure, 2 usage or config error (run: the app's own status).
//
// Start-up: only the module of the subcommand named on the command line is imported (with its
// dependencies: the AWS SDK, zod, the proxy ...). `ee-parent --help` and an unknown command load
// none of them; the listing below gives each command's one-line summary.
import { Command } from 'commander';
import { version } from '../package.json';
import { configureProgram, deferRequiredOptions } from './usage.js';

type Module = { register(program: Command): void };

const COMMANDS: ReadonlyArray<{
  names: string[];
  summaries: string[];
  load: () => Promise<Module>;
}> = [
  {
    names: ['vsock-proxy'],
    summaries: ['Drop-in for AWS vsock-proxy: vsock LOCAL_PORT -> REMOTE_ADDR:REMOTE_PORT.'],
    load: () => import('./commands/vsock-proxy.js'),
  },
  {
    names: ['run'],
    summaries: ['Serve every parent-side route of a deployment from parent.yaml.'],
    load: () => import('./commands/run.js'),
  },
  {
    names: ['kms-local'],
    summaries: ['Serve a local attested KMS (development and tests).'],
    load: () => import('./commands/kms-local.js'),
  },
  {
    names: ['credentials-relay'],
    summaries: ["Serve this instance's AWS credentials to the enclave over vsock."],
    load: () => import('./commands/credentials.js'),
  },
  {
    names: ['nfs-exports'],
    summaries: ['Print the /etc/exports line for an enclave volume and check the live exports.'],
    load: () => import('./commands/nfs-exports.js'),
  },
  {
    names: ['run-enclave', 'describe-enclaves', 'terminate-enclave', 'console'],
    summaries: [
      'Start a local enclave from an EIF (QEMU nitro-enclave), as nitro-cli does.',
      'List the running local enclaves (nitro-cli JSON).',
      'Stop a local enclave.',
      "Stream a debug-mode local enclave's console.",
    ],
    load: () => import('./commands/enclave.js'),
  },
];

/** The subcommand named on the command line (`ee-parent [-h] NAME ...` or `help NAME`). */
function requested(argv: string[]): string | undefined {
  const operands = argv.filter((a) => !a.startsWith('-'));
  return operands[0] === 'help' ? operands[1] : operands[0];
}

const program = configureProgram(
  new Command('ee-parent')
    .description(
      'The parent-instance side of enclave-extras: vsock proxies, routes, egress gateway, credentials relay and local attested KMS.',
    )
    .version(version),
  'ee-parent',
);

async function main(): Promise<void> {
  const name = requested(process.argv.slice(2));
  const entry = COMMANDS.find((c) => name !== undefined && c.names.includes(name));
  if (entry) (await entry.load()).register(program);
  else {
    for (const c of COMMANDS) {
      c.names.forEach((n, i) => {
        program.command(n).summary(c.summaries[i] ?? '');
      });
    }
  }
  deferRequiredOptions(program);
  await program.parseAsync(process.argv);
}

main().catch((err: unknown) => {
  const e = err as { code?: string; message?: string };
  process.stderr.write(`ee-parent: ${e.code ? `${e.code}: ` : ''}${e.message ?? String(err)}\n`);
  process.exit(1);
});
