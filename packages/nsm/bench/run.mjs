// Runs INSIDE nsm-vm (started by `pnpm bench`): requests/s through @enclave-extras/nsm vs
// the Python ioctl loops (bench/raw_ioctl.py) measured just before in the same VM boot (JSON
// file argv[2]). Every figure is the best of ROUNDS windows: the machine is shared and noisy.
import { readFileSync } from 'node:fs';
import { deviceTransport, NsmClient } from '../dist/index.js';

const SECONDS = Number(process.env.NSM_BENCH_SECONDS ?? 1);
const ROUNDS = Number(process.env.NSM_BENCH_ROUNDS ?? 3);
const py = JSON.parse(readFileSync(process.argv[2], 'utf8'));

async function best(op, inFlight) {
  let top = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const start = performance.now();
    const deadline = start + SECONDS * 1000;
    let n = 0;
    await Promise.all(
      Array.from({ length: inFlight }, async () => {
        while (performance.now() < deadline) {
          await op();
          n++;
        }
      }),
    );
    top = Math.max(top, n / ((performance.now() - start) / 1000));
  }
  return top;
}

const auto = await NsmClient.open();
const async = await NsmClient.open({ transport: await deviceTransport({ dispatch: 'async' }) });
const getRandomReq = Uint8Array.of(0x69, ...new TextEncoder().encode('GetRandom'));
const describeReq = Uint8Array.from(
  Buffer.from('a16b4465736372696265504352a165696e64657810', 'hex'),
);

const variants = {
  DescribePCR: [
    ['transport.request() only (raw bytes)', () => auto.transport.request(describeReq), 1],
    ['client.describePcr(16)', () => auto.describePcr(16), 1],
    ['client.describePcr(16), 8 in flight', () => auto.describePcr(16), 8],
    ["client.describePcr(16), dispatch 'async'", () => async.describePcr(16), 1],
  ],
  GetRandom: [
    ['transport.request() only (raw bytes)', () => auto.transport.request(getRandomReq), 1],
    ['client.getRandom(256)', () => auto.getRandom(256), 1],
    ['client.getRandom(256), 8 in flight', () => auto.getRandom(256), 8],
    ["client.getRandom(256), dispatch 'async'", () => async.getRandom(256), 1],
  ],
};

// warm up: JIT tiers are slow to kick in under TCG
for (const list of Object.values(variants))
  for (const [, op] of list) for (let i = 0; i < 300; i++) await op();

const rows = [];
for (const [name, list] of Object.entries(variants)) {
  const base = py.full[name];
  rows.push([name, 'python: encode + ioctl + decode (baseline)', base, 1]);
  rows.push([
    name,
    'python: ioctl only, pre-encoded request',
    py.raw[name],
    py.raw[name] / base,
    undefined,
  ]);
  for (const [label, op, inFlight] of list) {
    const rps = await best(op, inFlight);
    rows.push([name, `nsm ${label}`, rps, rps / base]);
  }
}
await auto.close();
await async.close();

console.log(
  `\nNSM requests/s in nsm-vm (QEMU virtio-nsm under TCG; best of ${ROUNDS} x ${SECONDS} s; same VM boot)\n`,
);
console.log(
  `${'request'.padEnd(12)} ${'client'.padEnd(48)} ${'req/s'.padStart(8)} ${'vs baseline'.padStart(12)}`,
);
for (const [req, label, rps, ratio] of rows) {
  console.log(
    `${req.padEnd(12)} ${label.padEnd(48)} ${rps.toFixed(0).padStart(8)} ${`${ratio.toFixed(2)}x`.padStart(12)}`,
  );
}
console.log(
  "\nbaseline = the selftest-style Python client (its own CBOR encode/decode per call). dispatch 'auto' (default) calls these ioctls on the main thread; 'async' pays two koffi worker-thread hand-offs per call.",
);
