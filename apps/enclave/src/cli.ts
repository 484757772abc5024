#!/usr/bin/env node
// ee-enclave: parses flags and config, then composes the @enclave-extras packages.
// Each subcommand lives in src/commands/<name>.ts and exports register(program).
// Exit codes: 0 ok, 1 runtime failure, 2 usage or config error (run: the app's own status).
//
// Start-up: only the module of the subcommand named on the command line is imported (with its
// dependencies: the AWS SDK, the NSM client, the proxy ...). `ee-enclave --help` and an unknown
// command load none of them; the listing below gives each command's one-line summary.
import { Command } from 'commander';
import { version } from '../package.json';
import { configureProgram, deferRequiredOptions } from './usage.js';

type Module = { register(program: Command): void };

const COMMANDS: ReadonlyArray<{ name: string; summary: string; load: () => Promise<Module> }> = [
  {
    name: 'run',
    summary:
      'The enclave entrypoint: network setup, TCP<->vsock routes, egress gateway, then the app.',
    load: () => import('./commands/run.js'),
  },
  {
    name: 'attest',
    summary: 'Create and verify Nitro attestation documents.',
    load: () => import('./commands/attest.js'),
  },
  {
    name: 'kms',
    summary: 'AWS KMS from the enclave, attested where KMS supports it.',
    load: () => import('./commands/kms.js'),
  },
  {
    name: 'nsm',
    summary: 'Talk to the Nitro Secure Module (or its simulator).',
    load: () => import('./commands/nsm.js'),
  },
];

/** The subcommand named on the command line (`ee-enclave [-h] NAME ...` or `help NAME`). */
function requested(argv: string[]): string | undefined {
  const operands = argv.filter((a) => !a.startsWith('-'));
  return operands[0] === 'help' ? operands[1] : operands[0];
}

const program = configureProgram(
  new Command('ee-enclave')
    .description(
      'The enclave side of enclave-extras: entrypoint with TCP<->vsock routes and egress gateway, plus attest/kms/nsm tools.',
    )
    .version(version),
  'ee-enclave',
);

async function main(): Promise<void> {
  const name = requested(process.argv.slice(2));
  const entry = COMMANDS.find((c) => c.name === name);
  if (entry) (await entry.load()).register(program);
  else for (const c of COMMANDS) program.command(c.name).summary(c.summary);
  deferRequiredOptions(program);
  await program.parseAsync(process.argv);
}

main().catch((err: unknown) => {
  const e = err as { code?: string; message?: string };
  process.stderr.write(`ee-enclave: ${e.code ? `${e.code}: ` : ''}${e.message ?? String(err)}\n`);
  process.exit(1);
});
