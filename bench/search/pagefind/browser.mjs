// Pagefind peer: per query, a fresh context (empty cache) opens search.html?<query>;
// bytes split into Pagefind's first load (js, wasm, entry, meta) and the query's files.
//   node browser.mjs <base url> <queries.txt>  → JSON lines
import { readFileSync } from 'node:fs';
import { chromium } from '../../../tests/browser/node_modules/playwright-core/index.mjs';

const [base, queriesFile] = process.argv.slice(2);
const queries = readFileSync(queriesFile, 'utf8').split('\n').filter(l => l && !l.startsWith('#')).map(l => l.split('\t'))
  .filter(([, qs]) => !/(^|&)(from|to|bbox|page)=/.test(qs || ''));
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium', headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
});
for (const [name, qs] of queries) {
  const samples = [];
  for (let run = 0; run < 3; run++) {
    const context = await browser.newContext();
    const page = await context.newPage();
    // Playwright sees the requests of the page and of its workers (Pagefind searches in one).
    const sizes = [];
    const pending = [];
    page.on('requestfinished', r => pending.push(r.sizes().then(s => sizes.push([r.url(), s.responseBodySize + s.responseHeadersSize]))));
    await page.goto(`${base}search.html?${qs || ''}`);
    await page.locator('body[data-state=ready]').waitFor({ timeout: 120000 });
    const stats = await page.evaluate(() => ({ ms: Number(document.body.dataset.ms), readyAt: Number(document.body.dataset.readyAt), total: document.querySelector('#total').textContent }));
    await new Promise(r => setTimeout(r, 100));
    await Promise.all(pending);
    let first = 0, query = 0, firstReq = 0, queryReq = 0;
    for (const [url, n] of sizes) {
      if (/\.(pf_index|pf_filter|pf_fragment)$/.test(url)) { query += n; queryReq++; } else { first += n; firstReq++; }
    }
    samples.push({ ...stats, first, firstReq, query, queryReq });
    await context.close();
  }
  samples.sort((a, b) => a.readyAt - b.readyAt);
  const m = samples[1];
  console.log(JSON.stringify({ name, qs, total: m.total, ready_ms: m.readyAt, query_ms: m.ms, query_bytes: m.query, query_requests: m.queryReq, first_bytes: m.first, first_requests: m.firstReq }));
}
await browser.close();
