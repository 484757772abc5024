// The "enclave" of the transparent-egress test, in its own network namespace (unshare -rn) with
// only lo: a stale EE_EGRESS chain from a "crashed run" is planted first, then runEnclave (the
// built package) runs app.mjs with egress: transparent. Prints one JSON line: the app's exit
// status and the nat table, routes (and in 'dns' mode /etc/resolv.conf, a bind-mounted test file)
// after runEnclave returned.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseConfig } from '@enclave-extras/proxy/config';
import { enclaveConfigSchema, runEnclave } from '../../dist/index.js';

const [dir, app, mode = 'plain'] = process.argv.slice(2);
const ipt = (...a) => execFileSync('iptables-legacy', ['-w', ...a], { encoding: 'utf8' });
// A crashed run's leftovers: the chain with a rule that would let everything through, and a jump.
ipt('-t', 'nat', '-N', 'EE_EGRESS');
ipt('-t', 'nat', '-A', 'EE_EGRESS', '-p', 'tcp', '-j', 'RETURN');
ipt('-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '-j', 'EE_EGRESS');

const config = parseConfig(
  `
network:
  hostsFile: ${join(dir, 'hosts')}
egressGateway:
  listen: tcp:127.0.0.1:3128
  parent: vsock:${process.env.EE_TEST_PARENT_CID ?? 3}:8080
egress: transparent
transparent:
  port: 15001
  ipv6: false
${mode === 'dns' ? `dns:\n  parent: vsock:${process.env.EE_TEST_PARENT_CID ?? 3}:8053\n` : ''}`,
  enclaveConfigSchema,
);
const lines = [];
const logger = {};
for (const level of ['trace', 'debug', 'info', 'warn', 'error', 'fatal']) {
  logger[level] = (obj, msg) => lines.push({ level, msg, ...obj });
}
logger.child = () => logger;
const exit = await runEnclave(config, {
  command: process.execPath,
  args: [app, join(dir, 'app.json')],
  logger,
});
const after = {
  exit: exit.status,
  nat: ipt('-t', 'nat', '-S'),
  routes: execFileSync('ip', ['-4', 'route', 'show'], { encoding: 'utf8' }),
  resolvConf: mode === 'dns' ? readFileSync('/etc/resolv.conf', 'utf8') : undefined,
  app: JSON.parse(readFileSync(join(dir, 'app.json'), 'utf8')),
  log: lines.filter(
    (l) =>
      l.level === 'warn' || l.level === 'error' || /transparent|egress|closed/.test(l.msg ?? ''),
  ),
};
process.stdout.write(`${JSON.stringify(after)}\n`);
