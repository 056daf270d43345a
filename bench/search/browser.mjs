// Per query, in a fresh browser context (empty HTTP cache): open the viewer at
// <base>?<query>, wait for the results, and record bytes (encoded, as sent
// over the wire), requests and the time from navigation start to the results.
//   node browser.mjs <base url> <queries.txt>  → JSON lines on stdout
import { readFileSync } from 'node:fs';
import { chromium } from '../../tests/browser/node_modules/playwright-core/index.mjs';

const [base, queriesFile] = process.argv.slice(2);
const queries = readFileSync(queriesFile, 'utf8').split('\n').filter(l => l && !l.startsWith('#')).map(l => l.split('\t'));
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium', headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
});
for (const [name, qs] of queries) {
  const samples = [];
  for (let run = 0; run < 3; run++) {
    const context = await browser.newContext();
    const page = await context.newPage();
    const cdp = await context.newCDPSession(page);
    await cdp.send('Network.enable');
    await cdp.send('Network.setCacheDisabled', { cacheDisabled: true });
    const urls = new Map();
    const sizes = [];
    cdp.on('Network.responseReceived', e => urls.set(e.requestId, e.response.url));
    cdp.on('Network.loadingFinished', e => sizes.push([urls.get(e.requestId) || '', e.encodedDataLength]));
    await page.goto(`${base}?${qs || ''}`);
    await page.locator('.results[data-state=ready]').waitFor({ timeout: 60000 });
    const stats = await page.locator('#stats').evaluate(el => ({ ms: Number(el.dataset.ms), readyAt: Number(el.dataset.readyAt), total: document.querySelector('#total').textContent }));
    await new Promise(r => setTimeout(r, 50));
    let first = 0, query = 0, firstReq = 0, queryReq = 0;
    for (const [url, n] of sizes) {
      if (/\/index\/(?!index\.json)/.test(url)) { query += n; queryReq++; } else { first += n; firstReq++; }
    }
    samples.push({ ...stats, first, firstReq, query, queryReq });
    await context.close();
  }
  samples.sort((a, b) => a.readyAt - b.readyAt);
  const m = samples[1];
  console.log(JSON.stringify({ name, qs, total: m.total, ready_ms: m.readyAt, query_ms: m.ms, query_bytes: m.query, query_requests: m.queryReq, first_bytes: m.first, first_requests: m.firstReq }));
}
await browser.close();
