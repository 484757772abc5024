// Test preload: `node --import scripts/log-module-loads.mjs ...` appends the URL of every module
// the process resolves (ESM imports and, with registerHooks, require() too) to $EE_LOAD_LOG, one
// per line. The tests that check what a command or an entry point loads (apps' cli-usage,
// proxy's entry-weight) read that file. In-thread hooks where Node has them (22.15+), so nothing
// is printed; module.register() (deprecated on Node 26) only as a fallback.
import { appendFileSync } from 'node:fs';
import module from 'node:module';

const logFile = process.env.EE_LOAD_LOG;
if (!logFile) throw new Error('log-module-loads.mjs: set EE_LOAD_LOG to the file to append to');
if (typeof module.registerHooks === 'function') {
  module.registerHooks({
    resolve(specifier, context, next) {
      const r = next(specifier, context);
      appendFileSync(logFile, `${r.url}\n`);
      return r;
    },
  });
} else {
  const hooks = [
    "import { appendFileSync } from 'node:fs';",
    'export async function resolve(s, c, next) {',
    '  const r = await next(s, c);',
    "  appendFileSync(process.env.EE_LOAD_LOG, r.url + '\\n');",
    '  return r;',
    '}',
  ].join('\n');
  module.register(`data:text/javascript,${encodeURIComponent(hooks)}`);
}
