// The viewer's start-up, per cold load (fresh browser context, cache disabled, as browser.mjs):
// resource timings, paint timings and marks from an init script (wasm instantiation, the
// TrunkApplicationStarted event, the viewer taking and receiving each file the page prefetched,
// result rows in the DOM), plus the viewer's own readyAt. Builds are alternated run by run.
//   node startup.mjs <base url>[,<base url>...] <runs> <query string>...  -> JSON lines, one per load
import { chromium } from '../../tests/browser/node_modules/playwright-core/index.mjs';
const [bases, runsS, ...qs] = process.argv.slice(2);
const variants = bases.split(',');
const runs = Number(runsS);
const init = `(() => {
  const marks = window.__marks = {};
  const m = (k) => { if (!(k in marks)) marks[k] = performance.now(); };
  for (const f of ['instantiateStreaming', 'instantiate', 'compileStreaming', 'compile']) {
    const orig = WebAssembly[f];
    WebAssembly[f] = function (...a) { m('wasm.' + f + '.call'); return orig.apply(this, a).then(r => { m('wasm.' + f + '.done'); return r; }); };
  }
  addEventListener('TrunkApplicationStarted', () => m('main.returned'));
  let pre;
  Object.defineProperty(window, 'fedstacPrefetch', { configurable: true, get() { return pre; }, set(v) {
    pre = new Proxy(v, { get(t, k) { const val = t[k]; if (typeof k === 'string' && val && val.then) { const n = k.replace(/^.*\\/(?=index\\/|sites)/, ''); m('take:' + n); val.then(() => m('resolved:' + n)); } return val; } });
  }});
  new MutationObserver(() => { if (document.querySelector('.results[data-state=ready]')) m('dom.rows'); if (document.querySelector('.filters')) m('dom.filters'); }).observe(document, { subtree: true, childList: true, attributes: true });
  window.__long = [];
  try { new PerformanceObserver(l => { for (const e of l.getEntries()) window.__long.push([Math.round(e.startTime), Math.round(e.duration)]); }).observe({ type: 'longtask', buffered: true }); } catch (e) {}
})();`;
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium', headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
});
for (let run = 0; run < runs; run++) {
  for (const q of qs) {
    for (const base of (run % 2 ? [...variants].reverse() : variants)) {
      const context = await browser.newContext();
      await context.addInitScript(init);
      const page = await context.newPage();
      const cdp = await context.newCDPSession(page);
      await cdp.send('Network.enable');
      await cdp.send('Network.setCacheDisabled', { cacheDisabled: true });
      await page.goto(`${base}?${q}`);
      await page.locator('.results[data-state=ready]').waitFor({ timeout: 60000 });
      await page.locator('.filters[data-counts=ready]').waitFor({ timeout: 60000 });
      await new Promise(r => setTimeout(r, 30));
      const r = await page.evaluate(() => {
        const nav = performance.getEntriesByType('navigation')[0];
        const res = performance.getEntriesByType('resource').map(e => [e.name.replace(location.origin, '').replace(/^\/[^/]*\//, ''), Math.round(e.startTime * 10) / 10, Math.round(e.responseEnd * 10) / 10, e.encodedBodySize, e.initiatorType]);
        const paint = Object.fromEntries(performance.getEntriesByType('paint').map(e => [e.name, Math.round(e.startTime * 10) / 10]));
        const st = document.querySelector('#stats').dataset;
        return { nav: { responseEnd: nav.responseEnd, domInteractive: nav.domInteractive, dcl: nav.domContentLoadedEventEnd, load: nav.loadEventEnd }, res, paint, marks: window.__marks, long: window.__long, readyAt: Number(st.readyAt), ms: Number(st.ms), countsMs: Number(st.countsMs) };
      });
      console.log(JSON.stringify({ base, q, run, ...r }));
      await context.close();
    }
  }
}
await browser.close();
