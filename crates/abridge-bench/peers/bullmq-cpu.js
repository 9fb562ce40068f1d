// BullMQ processing phase with CPU per job (node process + redis-server), for BENCHMARKS.md.
const { Queue, Worker } = require('bullmq');
const IORedis = require('ioredis');
const N = parseInt(process.argv[2] || '20000');
const C = parseInt(process.argv[3] || '50');
const port = parseInt(process.argv[4] || '6379');
const connection = { host: '127.0.0.1', port };
async function redisCpu(r) {
  const info = await r.info('cpu');
  const g = (k) => parseFloat(info.match(new RegExp(k + ':([0-9.]+)'))[1]);
  return g('used_cpu_sys') + g('used_cpu_user');
}
(async () => {
  const r = new IORedis(port);
  const name = 'cpu' + Date.now();
  const q = new Queue(name, { connection });
  for (let i = 0; i < N; i += 1000) {
    const jobs = [];
    for (let j = i; j < Math.min(N, i + 1000); j++)
      jobs.push({ name: 'sum', data: { url: `https://youtu.be/v${j}` }, opts: { priority: 1 + (j % 3) } });
    await q.addBulk(jobs);
  }
  const rc0 = await redisCpu(r);
  const c0 = process.cpuUsage();
  let done = 0;
  const t1 = Date.now();
  await new Promise((resolve) => {
    const w = new Worker(name, async () => 'ok', { connection, concurrency: C });
    w.on('completed', () => { if (++done === N) { resolve(); w.close(); } });
  });
  const t2 = Date.now();
  const c = process.cpuUsage(c0);
  const rc = (await redisCpu(r)) - rc0;
  console.log(JSON.stringify({ n: N, concurrency: C, process_per_s: Math.round(N / ((t2 - t1) / 1000)),
    node_cpu_usec_per_job: +((c.user + c.system) / N).toFixed(1),
    redis_cpu_usec_per_job: +((rc * 1e6) / N).toFixed(1) }));
  await q.obliterate({ force: true }).catch(() => {});
  await q.close(); await r.quit();
  process.exit(0);
})();
