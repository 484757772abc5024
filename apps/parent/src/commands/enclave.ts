// nitro-cli's enclave lifecycle on any Linux machine, backed by QEMU's nitro-enclave machine
// (@enclave-extras/local-enclave): run-enclave, describe-enclaves, terminate-enclave, console.
// Flags and JSON output follow nitro-cli; the extra flags (--qemu, --vsock-dir, --run-dir ...)
// say where the local pieces are.
import {
  describeEnclaves,
  enclaveState,
  followConsole,
  type RunEnclaveOptions,
  runEnclave,
  terminateAllEnclaves,
  terminateEnclave,
} from '@enclave-extras/local-enclave';
import type { Command } from 'commander';
import { exitWithError, intArg, UsageError } from '../common.js';

interface RunFlags {
  eifPath: string;
  cpuCount: string;
  memory: string;
  enclaveCid?: string;
  enclaveName?: string;
  debugMode?: boolean;
  attachConsole?: boolean;
  qemu?: string;
  accel: string;
  parentRole?: string;
  parentId?: string;
  bootTimeout?: string;
  vsockDir?: string;
  runDir?: string;
}

const RUN_DIR_HELP =
  'state, console and logs of local enclaves (default: ENCLAVE_EXTRAS_RUN_DIR, else /run/enclave-extras/enclaves)';

function print(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** Streams the console until the enclave stops or SIGINT (then the enclave keeps running). */
async function attach(enclaveId: string, runDir: string | undefined): Promise<void> {
  const ac = new AbortController();
  const onSig = () => ac.abort();
  process.once('SIGINT', onSig);
  await followConsole(enclaveId, (d) => process.stdout.write(d), {
    ...(runDir ? { runDir } : {}),
    signal: ac.signal,
  });
  process.removeListener('SIGINT', onSig);
}

export function register(program: Command): void {
  program
    .command('run-enclave')
    .description(
      "Start an enclave from an EIF, as nitro-cli run-enclave, under QEMU's nitro-enclave machine on this machine (no Nitro hardware). Prints nitro-cli's JSON once the enclave's init sent its boot heartbeat; the enclave keeps running under a detached supervisor.",
    )
    .requiredOption('--eif-path <file>', 'the enclave image')
    .requiredOption('--cpu-count <n>', 'vCPUs')
    .requiredOption('--memory <MiB>', 'memory in MiB')
    .option('--enclave-cid <cid>', 'the enclave CID (default: the lowest free from 16)')
    .option('--enclave-name <name>', 'default: the EIF file name without .eif')
    .option('--debug-mode', 'debug mode (Flags DEBUG_MODE; the console can be attached)')
    .option('--attach-console', 'stream the console after starting (implies --debug-mode)')
    .option(
      '--qemu <path>',
      'qemu-system-x86_64 with the nitro-enclave machine (also ENCLAVE_EXTRAS_QEMU; else nsm-vm --qemu-path)',
    )
    .option('--accel <kvm|tcg|auto>', 'QEMU accelerator', 'auto')
    .option('--parent-role <arn>', "the parent's IAM role ARN (sets PCR3 as Nitro does)")
    .option('--parent-id <id>', "the parent's instance id (sets PCR4 as Nitro does)")
    .option(
      '--boot-timeout <seconds>',
      'boot failure when no heartbeat within this (default: 60 s + 10 s per 16 MiB of EIF)',
    )
    .option(
      '--vsock-dir <dir>',
      "the vsock emulation folder the enclave's vsock is bridged to: the one ee-parent run uses (also ENCLAVE_EXTRAS_VSOCK_DIR)",
    )
    .option('--run-dir <dir>', RUN_DIR_HELP)
    .addHelpText(
      'after',
      '\nThe guest connects to the parent (CID 3) port P: it reaches the emulated vsock listener on P in --vsock-dir (e.g. ee-parent run --vsock-dir DIR). The heartbeat (port 9000) is answered by the supervisor.\nExit codes: 0 started (with --attach-console: the enclave stopped or Ctrl-C detached), 1 runtime failure (boot failure with the console tail, no QEMU, no backend), 2 usage error.',
    )
    .action(async (flags: RunFlags) => {
      try {
        const vsockDir = flags.vsockDir ?? process.env.ENCLAVE_EXTRAS_VSOCK_DIR;
        if (!vsockDir) {
          throw new UsageError(
            "--vsock-dir DIR (or ENCLAVE_EXTRAS_VSOCK_DIR) is required: the enclave's vsock is bridged to the vsock emulation folder that ee-parent run uses.",
          );
        }
        if (!['kvm', 'tcg', 'auto'].includes(flags.accel)) {
          throw new UsageError(`--accel "${flags.accel}" is not one of kvm, tcg, auto.`);
        }
        const debugMode = flags.debugMode === true || flags.attachConsole === true;
        let cid: number;
        if (flags.enclaveCid !== undefined) {
          cid = intArg('--enclave-cid', flags.enclaveCid, 4, 0xfffffffe);
        } else {
          const used = new Set(
            describeEnclaves(flags.runDir ? { runDir: flags.runDir } : {}).map((e) => e.EnclaveCID),
          );
          cid = 16;
          while (used.has(cid)) cid++;
        }
        const options: RunEnclaveOptions = {
          eifPath: flags.eifPath,
          cpuCount: intArg('--cpu-count', flags.cpuCount, 1, 64),
          memoryMiB: intArg('--memory', flags.memory, 64, 1024 * 1024),
          enclaveCid: cid,
          vsockDir,
          debugMode,
          accel: flags.accel as 'kvm' | 'tcg' | 'auto',
          ...(flags.enclaveName ? { enclaveName: flags.enclaveName } : {}),
          ...(flags.qemu ? { qemu: flags.qemu } : {}),
          ...(flags.parentRole ? { parentRole: flags.parentRole } : {}),
          ...(flags.parentId ? { parentId: flags.parentId } : {}),
          ...(flags.bootTimeout
            ? { bootTimeoutMs: intArg('--boot-timeout', flags.bootTimeout, 1, 86_400) * 1000 }
            : {}),
          ...(flags.runDir ? { runDir: flags.runDir } : {}),
        };
        const info = await runEnclave(options);
        print(info);
        if (flags.attachConsole) await attach(info.EnclaveID, flags.runDir);
        process.exit(0);
      } catch (err) {
        exitWithError(err);
      }
    });

  program
    .command('describe-enclaves')
    .description(
      'List the running local enclaves as nitro-cli describe-enclaves does (JSON array: EnclaveName, EnclaveID, ProcessID, EnclaveCID, NumberOfCPUs, CPUIDs, MemoryMiB, State, Flags).',
    )
    .option('--run-dir <dir>', RUN_DIR_HELP)
    .addHelpText('after', '\nExit codes: 0 ok, 1 the run directory cannot be read.')
    .action((flags: { runDir?: string }) => {
      try {
        print(describeEnclaves(flags.runDir ? { runDir: flags.runDir } : {}));
      } catch (err) {
        exitWithError(err);
      }
    });

  program
    .command('terminate-enclave')
    .description(
      'Stop a local enclave (QEMU and its supervisor) as nitro-cli terminate-enclave does; prints {EnclaveName, EnclaveID, Terminated}.',
    )
    .option('--enclave-id <id>', 'the enclave to stop')
    .option('--all', 'stop every running local enclave')
    .option('--run-dir <dir>', RUN_DIR_HELP)
    .addHelpText('after', '\nExit codes: 0 terminated, 1 no such enclave, 2 usage error.')
    .action(async (flags: { enclaveId?: string; all?: boolean; runDir?: string }) => {
      try {
        if (!flags.all === !flags.enclaveId) {
          throw new UsageError('give exactly one of --enclave-id ID and --all.');
        }
        const opts = flags.runDir ? { runDir: flags.runDir } : {};
        if (flags.all) {
          for (const info of await terminateAllEnclaves(opts)) print(info);
        } else {
          print(await terminateEnclave(flags.enclaveId as string, opts));
        }
      } catch (err) {
        exitWithError(err);
      }
    });

  program
    .command('console')
    .description(
      "Stream a debug-mode local enclave's console (from its start) until it stops, as nitro-cli console does. Ctrl-C detaches.",
    )
    .requiredOption('--enclave-id <id>', 'the enclave')
    .option('--run-dir <dir>', RUN_DIR_HELP)
    .addHelpText(
      'after',
      '\nExit codes: 0 the enclave stopped or detached, 1 no such enclave / not in debug mode.',
    )
    .action(async (flags: { enclaveId: string; runDir?: string }) => {
      try {
        const s = enclaveState(flags.enclaveId, flags.runDir ? { runDir: flags.runDir } : {});
        if (s.Flags !== 'DEBUG_MODE') {
          throw Object.assign(
            new Error(
              `Enclave ${flags.enclaveId} is not running in debug mode: start it with run-enclave --debug-mode to read its console.`,
            ),
            { code: 'ERR_LOCAL_ENCLAVE_NOT_DEBUG' },
          );
        }
        await attach(flags.enclaveId, flags.runDir);
      } catch (err) {
        exitWithError(err);
      }
    });
}
