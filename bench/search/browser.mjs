// Per query, in a fresh browser context (empty HTTP cache): open the viewer at
// <base>?<query>, wait for the results and then the live counts, and record
// bytes (encoded, as sent over the wire; rows and counts), requests and the
// time from navigation start to the result rows (first results) and counts.
//   node browser.mjs <base url> <queries.txt>  → JSON lines on stdout
//   TIMING=1: also each request's start and end (ms from the first request) of the median run
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
    const starts = new Map();
    const sizes = [];
    const timeline = [];
    let t0 = null;
    cdp.on('Network.requestWillBeSent', e => { if (t0 === null) t0 = e.timestamp; starts.set(e.requestId, e.timestamp); urls.set(e.requestId, e.request.url); });
    cdp.on('Network.responseReceived', e => urls.set(e.requestId, e.response.url));
    const done = (e, n) => {
      const url = urls.get(e.requestId) || '';
      sizes.push([url, n]);
      timeline.push([url.replace(base, ''), Math.round((starts.get(e.requestId) - t0) * 1000), Math.round((e.timestamp - t0) * 1000), n]);
    };
    cdp.on('Network.loadingFinished', e => done(e, e.encodedDataLength));
    cdp.on('Network.loadingFailed', e => done(e, 0));
    await page.goto(`${base}?${qs || ''}`);
    await page.locator('.results[data-state=ready]').waitFor({ timeout: 60000 });
    await page.locator('.filters[data-counts=ready]').waitFor({ timeout: 60000 });
    const stats = await page.locator('#stats').evaluate(el => ({ ms: Number(el.dataset.ms), countsMs: Number(el.dataset.countsMs), readyAt: Number(el.dataset.readyAt), total: document.querySelector('#total').textContent, exact: document.querySelector('#total').dataset.exact === 'true' }));
    // Files the page prefetched for the query (viewer/index.html) that the viewer never took: wasted bytes.
    stats.notTaken = await page.evaluate(() => (window.fedstacPrefetched || []).filter(u => u in (window.fedstacPrefetch || {})).length);
    await new Promise(r => setTimeout(r, 50));
    let first = 0, query = 0, firstReq = 0, queryReq = 0;
    for (const [url, n] of sizes) {
      if (/\/index\/(?!index\.json)/.test(url)) { query += n; queryReq++; } else { first += n; firstReq++; }
    }
    samples.push({ ...stats, first, firstReq, query, queryReq, timeline });
    await context.close();
  }
  samples.sort((a, b) => a.readyAt - b.readyAt);
  const m = samples[1];
  console.log(JSON.stringify({ name, qs, total: m.total, exact: m.exact, ready_ms: m.readyAt, query_ms: m.ms, counts_ms: m.countsMs, query_bytes: m.query, query_requests: m.queryReq, not_taken: m.notTaken, first_bytes: m.first, first_requests: m.firstReq, ...(process.env.TIMING ? { timeline: m.timeline.sort((a, b) => a[1] - b[1]) } : {}) }));
}
await browser.close();
