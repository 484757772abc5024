// ee-enclave nsm describe|pcr|random, plus what the attest and kms commands share: the NSM
// source (--nsm device|simulator[:DIR]|socket:PATH), byte inputs and JSON output.
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { NsmClient } from '@enclave-extras/nsm';
import { type Command, Option } from 'commander';
import { usageError } from '../usage.js';

/** Environment variable with the default NSM source (e.g. `socket:/run/nsm.sock`). */
export const NSM_ENV = 'ENCLAVE_EXTRAS_NSM';

export function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** Exits 2 with a usage error naming the flag: `ee-enclave: ERR_USAGE: <message>`. */
export function usage(cmd: Command, message: string): never {
  return usageError(cmd, 'ee-enclave', message);
}

/** Checks the --nsm source's syntax (before anything is opened). */
export function checkNsmSource(cmd: Command, source: string): void {
  if (source === 'device' || source === 'simulator') return;
  if (/^(?:simulator|socket):./.test(source)) return;
  usage(cmd, `--nsm ${source}: use device, simulator[:STATE_DIR] or socket:PATH`);
}

export function nsmOption(): Option {
  return new Option(
    '--nsm <source>',
    'NSM to use: device (/dev/nsm), simulator[:STATE_DIR] (in process) or socket:PATH (simulator daemon)',
  )
    .env(NSM_ENV)
    .default('device');
}

/** Parses `hex:..`, `base64:..`, `file:PATH` or plain UTF-8 text into bytes. */
export function parseBytes(cmd: Command, flag: string, value: string): Uint8Array {
  const colon = value.indexOf(':');
  const kind = colon > 0 ? value.slice(0, colon) : '';
  const rest = value.slice(colon + 1);
  switch (kind) {
    case 'hex':
      if (!/^(?:[0-9a-fA-F]{2})*$/.test(rest))
        usage(cmd, `${flag}: hex:${rest.slice(0, 16)}... is not an even-length hex string`);
      return Buffer.from(rest, 'hex');
    case 'base64':
    case 'b64':
      if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(rest))
        usage(cmd, `${flag}: the base64 value has characters outside the base64 alphabet`);
      return Buffer.from(rest, 'base64');
    case 'file':
      try {
        return readFileSync(rest);
      } catch (err) {
        return usage(cmd, `${flag}: cannot read ${rest}: ${(err as Error).message}`);
      }
    case 'raw':
      return Buffer.from(rest, 'utf8');
    default:
      return Buffer.from(value, 'utf8');
  }
}

export function writeOut(value: unknown, json: boolean): void {
  process.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : `${String(value)}\n`);
}

export function defaultSimulatorDir(): string {
  return join(
    process.env.XDG_STATE_HOME ?? join(homedir(), '.local', 'state'),
    'enclave-extras',
    'nsm-simulator',
  );
}

/** Opens the NSM named by --nsm. */
export async function openNsm(cmd: Command, source: string): Promise<NsmClient> {
  checkNsmSource(cmd, source);
  // loaded when a command opens the NSM, not for --help
  const { NsmClient, NsmSimulator, socketTransport } = await import('@enclave-extras/nsm');
  if (source === 'device') return NsmClient.open();
  if (source === 'simulator' || source.startsWith('simulator:')) {
    const stateDir =
      source === 'simulator' ? defaultSimulatorDir() : source.slice('simulator:'.length);
    return NsmClient.open({ transport: new NsmSimulator({ stateDir }) });
  }
  if (source.startsWith('socket:')) {
    return NsmClient.open({ transport: await socketTransport(source.slice('socket:'.length)) });
  }
  return usage(cmd, `--nsm ${source}: use device, simulator[:STATE_DIR] or socket:PATH`);
}

interface NsmFlags {
  nsm: string;
  json: boolean;
}

export function register(program: Command): void {
  const nsm = program
    .command('nsm')
    .description('Talk to the Nitro Secure Module (or its simulator).');

  nsm
    .command('describe')
    .description('DescribeNSM: module id, version, PCR count, locked PCRs, digest.')
    .addOption(nsmOption())
    .option('--json', 'JSON output', false)
    .action(async (flags: NsmFlags, cmd: Command) => {
      const client = await openNsm(cmd, flags.nsm);
      try {
        const d = await client.describeNsm();
        if (flags.json) writeOut(d, true);
        else {
          process.stdout.write(
            `module ${d.moduleId}, version ${d.versionMajor}.${d.versionMinor}.${d.versionPatch}, ${d.maxPcrs} PCRs (${d.digest}), locked: ${d.lockedPcrs.join(',') || 'none'}\n`,
          );
        }
      } finally {
        await client.close();
      }
    });

  nsm
    .command('pcr <index>')
    .description(
      'DescribePCR: the value and lock state of one PCR (--extend DATA first extends it).',
    )
    .option('--extend <bytes>', 'extend the PCR with these bytes (hex:, base64:, file: or text)')
    .option('--lock', 'lock the PCR afterwards', false)
    .addOption(nsmOption())
    .option('--json', 'JSON output', false)
    .action(
      async (
        indexText: string,
        flags: NsmFlags & { extend?: string; lock: boolean },
        cmd: Command,
      ) => {
        const index = Number(indexText);
        if (!Number.isInteger(index) || index < 0 || index > 65535)
          usage(cmd, `nsm pcr: index ${indexText} must be an integer 0..65535`);
        const data =
          flags.extend !== undefined ? parseBytes(cmd, '--extend', flags.extend) : undefined;
        const client = await openNsm(cmd, flags.nsm);
        try {
          if (data) await client.extendPcr(index, data);
          if (flags.lock) await client.lockPcr(index);
          const p = await client.describePcr(index);
          const hex = Buffer.from(p.data).toString('hex');
          if (flags.json) writeOut({ index, locked: p.lock, value: hex }, true);
          else process.stdout.write(`PCR${index} ${hex}${p.lock ? ' (locked)' : ''}\n`);
        } finally {
          await client.close();
        }
      },
    );

  nsm
    .command('random [bytes]')
    .description('GetRandom: random bytes from the NSM (hex; default 32 bytes).')
    .addOption(nsmOption())
    .option('--json', 'JSON output', false)
    .action(async (n: string | undefined, flags: NsmFlags, cmd: Command) => {
      const count = n === undefined ? 32 : Number(n);
      if (!Number.isInteger(count) || count < 1 || count > 65536)
        usage(cmd, `nsm random: ${n} must be an integer 1..65536`);
      const client = await openNsm(cmd, flags.nsm);
      try {
        const bytes = await client.getRandom(count);
        const hex = Buffer.from(bytes).toString('hex');
        writeOut(flags.json ? { bytes: count, hex } : hex, flags.json);
      } finally {
        await client.close();
      }
    });
}
