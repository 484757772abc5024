// The one usage-error format and help layout of the CLI (kept free of heavy imports: cli.ts loads
// it for `--help`). Every usage error, commander's own (unknown option or command, missing
// argument, bad choice) and ours, is one line `<bin>: ERR_USAGE: <message>` on stderr, exit 2.
import type { Command, Option } from 'commander';

const WIDTH = 80;

/** Wraps the lines longer than `width` at spaces, continuing at the line's own indentation. */
export function wrapText(text: string, width = WIDTH): string {
  return text
    .split('\n')
    .map((line) => {
      if (line.length <= width) return line;
      const indent = /^\s*/.exec(line)?.[0] ?? '';
      const out: string[] = [];
      let current = '';
      for (const word of line.slice(indent.length).split(' ')) {
        const candidate = current ? `${current} ${word}` : word;
        if (current && indent.length + candidate.length > width) {
          out.push(indent + current);
          current = word;
        } else current = candidate;
      }
      if (current) out.push(indent + current);
      return out.join('\n');
    })
    .join('\n');
}

/** Formats a usage error line: `<bin>: ERR_USAGE: <message>` (commander's "error: " dropped). */
export function usageLine(bin: string, message: string, code = 'ERR_USAGE'): string {
  const text = message.replace(/^error: /, '').trimEnd();
  return text.startsWith(`${bin}: `) ? text : `${bin}: ${code}: ${text}`;
}

/**
 * Configures `program` (call before adding subcommands: commander copies these settings into
 * each subcommand it creates): the usage-error line, exit 2 for every usage error (0 for
 * --help/--version), help wrapped at 80 columns (after-texts included).
 */
export function configureProgram(program: Command, bin: string): Command {
  return program
    .configureOutput({
      writeOut: (s) => process.stdout.write(wrapText(s)),
      writeErr: (s) => process.stderr.write(wrapText(s)),
      // one line, never wrapped
      outputError: (s) => process.stderr.write(`${usageLine(bin, s)}\n`),
    })
    .configureHelp({ helpWidth: WIDTH, minWidthToWrap: 24 })
    .exitOverride((err) => {
      process.exit(err.exitCode === 0 ? 0 : 2);
    });
}

/**
 * Call once every command is registered. Commander checks required options before unknown ones
 * (`run --bogus` said "required option --config not specified"); this moves the required-option
 * check after the unknown-option and argument checks, into a preAction hook.
 */
export function deferRequiredOptions(program: Command): void {
  const required = new Map<Command, Option[]>();
  const walk = (cmd: Command) => {
    const opts = cmd.options.filter((o) => o.mandatory);
    for (const o of opts) o.mandatory = false;
    if (opts.length) required.set(cmd, opts);
    for (const sub of cmd.commands) walk(sub);
  };
  walk(program);
  program.hook('preAction', (_self, action) => {
    for (let cmd: Command | null = action; cmd; cmd = cmd.parent) {
      for (const o of required.get(cmd) ?? []) {
        if (cmd.getOptionValue(o.attributeName()) === undefined) {
          cmd.error(`required option '${o.flags}' not specified`, {
            exitCode: 2,
            code: 'commander.missingMandatoryOptionValue',
          });
        }
      }
    }
  });
}

/** Exits 2 with `<bin>: ERR_USAGE: <message>` through commander. */
export function usageError(cmd: Command, bin: string, message: string, code = 'ERR_USAGE'): never {
  return cmd.error(usageLine(bin, message, code), { exitCode: 2, code });
}
