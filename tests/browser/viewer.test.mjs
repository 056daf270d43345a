// The viewer in a real browser: Debian's headless Chromium driven by
// playwright-core, against demo sites built here by the fedstac binary and
// served under a path prefix by a real nginx started for the run.
//
//   FEDSTAC_BIN=target/debug/fedstac VIEWER_DIST=target/viewer-dist node --test viewer.test.mjs
//
// Expected totals and counts come from `fedstac-search` (the same engine over
// the same files; tests/python/test_search_index.py checks that engine
// against an independent CQL2 evaluation), so this checks the UI, the URL
// state and the fetching, not the query semantics a second time.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, mkdirSync, cpSync, readdirSync, readFileSync, statSync, chmodSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { chromium } from 'playwright-core';

const repo = resolve(dirname(new URL(import.meta.url).pathname), '../..');
const fedstac = process.env.FEDSTAC_BIN || join(repo, 'target/debug/fedstac');
const search = join(dirname(fedstac), 'fedstac-search');
// A synthetic index whose text postings are segmented like a 10M-item one's (index/examples/bench-index.rs).
const benchIndex = process.env.BENCH_INDEX_BIN || join(dirname(fedstac), 'examples', 'bench-index');
const dist = process.env.VIEWER_DIST || join(repo, 'target/viewer-dist');
const nginxBin = process.env.NGINX || '/usr/sbin/nginx';
const PREFIX = '/demo/';
const TIMEOUT = 20000;

let tmp, www, port, nginx, context, page, base;

function run(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => ok(p)); });
    s.on('error', fail);
  });
}

/// What the engine answers for a query string on a site.
function engine(site, qs) {
  return JSON.parse(run(search, [join(www, site, 'index'), qs]));
}

async function waitHttp(url) {
  for (let i = 0; i < 100; i++) {
    try { const r = await fetch(url); if (r.ok) return; } catch { /* not yet */ }
    await new Promise(r => setTimeout(r, 100));
  }
  throw new Error(`nginx did not answer ${url}`);
}

async function expectTotal(n) {
  const want = `${n.toLocaleString('en-US')} item${n === 1 ? '' : 's'}`;
  await page.locator('.results[data-state=ready] #total', { hasText: want }).waitFor({ timeout: TIMEOUT });
  assert.equal((await page.locator('#total').textContent()).trim(), want);
}

async function count(facet, value) {
  // Live counts fill in after the result rows.
  await page.locator('.filters[data-counts=ready]').waitFor({ timeout: TIMEOUT });
  const label = page.locator(`fieldset[data-facet=${facet}] li label`, { has: page.locator(`input[data-value="${value}"]`) });
  return Number((await label.locator('.count').textContent()) || 'NaN');
}

function params() {
  return new URL(page.url()).searchParams;
}

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'fedstac-browser-'));
  chmodSync(tmp, 0o755); // nginx's workers (www-data when started as root) read the site
  www = join(tmp, 'www');
  port = await freePort();
  base = `http://127.0.0.1:${port}${PREFIX}`;
  run(fedstac, ['--quiet', 'sample', join(www, 'archive'), '--extra-datasets', '30']); // ceda: over two result pages
  for (const [name, root] of [['ceda', 'ceda/badc/cmip6/data'], ['dkrz', 'dkrz/pool/data/CMIP6/data']]) {
    const config = join(tmp, `${name}.yaml`);
    writeFileSync(config, `site: {name: ${name}, title: ${name.toUpperCase()} test site}\n` +
      `roots: [{path: "${join(www, 'archive', root)}", recipe: cmip6, data_url: "${base}archive/${root}/"}]\n` +
      `output: "${join(www, name)}"\ncache: "${join(tmp, 'cache-' + name)}"\n`);
    run(fedstac, ['--quiet', 'build', '-c', config]);
  }
  for (const f of readdirSync(dist)) cpSync(join(dist, f), join(www, f), { recursive: true });
  run(benchIndex, ['100000', join(www, 'synthetic', 'index'), '--no-fgb', '--text-segments=2048,8192']);
  mkdirSync(join(www, 'broken'));
  writeFileSync(join(www, 'sites.json'), JSON.stringify([
    { name: 'ceda', title: 'CEDA test site', href: 'ceda/' },
    { name: 'dkrz', title: 'DKRZ test site', href: 'dkrz/' },
    { name: 'broken', title: 'Site without an index', href: 'broken/' },
    { name: 'synthetic', title: 'Synthetic, segmented text postings', href: 'synthetic/' },
  ]));
  for (const d of ['logs', 'tmp']) mkdirSync(join(tmp, d));
  writeFileSync(join(tmp, 'nginx.conf'), `
worker_processes 1;
pid ${tmp}/nginx.pid;
error_log ${tmp}/logs/error.log;
events { worker_connections 256; }
http {
  include /etc/nginx/mime.types;
  default_type application/octet-stream;
  access_log ${tmp}/logs/access.log;
  client_body_temp_path ${tmp}/tmp/body; proxy_temp_path ${tmp}/tmp/proxy; fastcgi_temp_path ${tmp}/tmp/fastcgi;
  uwsgi_temp_path ${tmp}/tmp/uwsgi; scgi_temp_path ${tmp}/tmp/scgi;
  server {
    listen 127.0.0.1:${port};
    location ${PREFIX} { alias ${www}/; }
  }
}
`);
  nginx = spawn(nginxBin, ['-p', tmp, '-e', join(tmp, 'logs/error.log'), '-c', join(tmp, 'nginx.conf'), '-g', 'daemon off;'], { stdio: 'inherit' });
  await waitHttp(`${base}sites.json`);
  context = await chromium.launchPersistentContext(mkdtempSync(join(tmp, 'profile-')), {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    acceptDownloads: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
    viewport: { width: 1200, height: 900 },
  });
  page = await context.newPage();
  page.on('pageerror', e => console.error('page error:', e.message));
});

after(async () => {
  await context?.close();
  if (nginx) {
    const exited = new Promise(ok => nginx.once('exit', ok));
    nginx.kill('SIGTERM');
    await exited;
  }
  if (tmp && !process.env.KEEP_TMP) rmSync(tmp, { recursive: true, force: true });
});

test('first load shows every item of the first site with facet counts', async () => {
  await page.goto(base);
  const all = engine('ceda', '');
  await expectTotal(all.total);
  assert.ok(all.total > 20);
  assert.equal(await count('variable', 'tas'), all.counts.variable.tas);
  assert.equal(await page.locator('.row').count(), Math.min(20, all.total));
});

test('picking facet values changes results and counts (OR within, AND across)', async () => {
  await page.locator('fieldset[data-facet=variable] input[data-value=tas]').check();
  let want = engine('ceda', 'f.variable=tas');
  await expectTotal(want.total);
  assert.deepEqual(params().getAll('f.variable'), ['tas']);
  assert.equal(await count('experiment', 'ssp245'), want.counts.experiment.ssp245);
  assert.notEqual(want.total, engine('ceda', '').total);

  await page.locator('fieldset[data-facet=variable] input[data-value=pr]').check();
  want = engine('ceda', 'f.variable=tas&f.variable=pr');
  await expectTotal(want.total);
  await page.locator('fieldset[data-facet=experiment] input[data-value=historical]').check();
  want = engine('ceda', 'f.variable=tas&f.variable=pr&f.experiment=historical');
  await expectTotal(want.total);
  assert.equal(await count('variable', 'tas'), want.counts.variable.tas);
  for (const row of await page.locator('.row .id').allTextContents()) assert.match(row, /\.historical\./);
});

test('back and forward walk the history of searches', async () => {
  await page.goBack();
  await expectTotal(engine('ceda', 'f.variable=tas&f.variable=pr').total);
  assert.equal(await page.locator('fieldset[data-facet=experiment] input[data-value=historical]').isChecked(), false);
  await page.goBack();
  await expectTotal(engine('ceda', 'f.variable=tas').total);
  await page.goForward();
  await expectTotal(engine('ceda', 'f.variable=tas&f.variable=pr').total);
});

test('free text search, typed from the keyboard', async () => {
  await page.goto(base);
  await expectTotal(engine('ceda', '').total);
  await page.locator('#q').focus();
  await page.keyboard.type('air temperature');
  await page.keyboard.press('Enter');
  const want = engine('ceda', 'q=air+temperature');
  await expectTotal(want.total);
  assert.ok(want.total > 0 && want.total < engine('ceda', '').total);
  assert.equal(params().get('q'), 'air temperature');
});

test('time filter keeps items overlapping the range', async () => {
  await page.goto(base);
  await expectTotal(engine('ceda', '').total);
  await page.locator('#from').fill('2016-06-01');
  await page.locator('#from').dispatchEvent('change');
  await expectTotal(engine('ceda', 'from=2016-06-01').total);
  await page.locator('#to').fill('2016-12-31');
  await page.locator('#to').dispatchEvent('change');
  const want = engine('ceda', 'from=2016-06-01&to=2016-12-31');
  await expectTotal(want.total);
  assert.ok(want.total > 0 && want.total < engine('ceda', '').total);
  assert.equal(params().get('to'), '2016-12-31');
});

test('a box typed in (or drawn on the map) filters by footprint', async () => {
  await page.goto(base);
  await expectTotal(engine('ceda', '').total);
  const inputs = page.locator('.coords input');
  for (const [i, v] of ['-5', '86', '5', '90'].entries()) await inputs.nth(i).fill(v);
  await inputs.nth(3).press('Enter');
  const want = engine('ceda', 'bbox=-5,86,5,90');
  await expectTotal(want.total);
  assert.ok(want.total > 0 && want.total < engine('ceda', '').total);
  // Drawing: drag across Europe on the map.
  await page.goto(base);
  await expectTotal(engine('ceda', '').total);
  const map = await page.locator('svg.map').boundingBox();
  const at = (lon, lat) => [map.x + (lon + 180) / 360 * map.width, map.y + (90 - lat) / 180 * map.height];
  await page.mouse.move(...at(0, 40));
  await page.mouse.down();
  await page.mouse.move(...at(10, 45), { steps: 4 });
  await page.mouse.move(...at(20, 50), { steps: 4 });
  await page.mouse.up();
  await page.locator('.chips', { hasText: 'area:' }).waitFor({ timeout: TIMEOUT });
  const bbox = params().get('bbox');
  assert.ok(bbox, 'the drawn box is in the URL');
  await expectTotal(engine('ceda', `bbox=${bbox}`).total);
});

test('switching sites with the picker searches the other site', async () => {
  await page.goto(`${base}?f.variable=tas`);
  await expectTotal(engine('ceda', 'f.variable=tas').total);
  await page.locator('label.site select').selectOption('dkrz');
  await expectTotal(engine('dkrz', 'f.variable=tas').total);
  assert.equal(params().get('site'), 'dkrz');
  assert.equal(await count('experiment', 'historical'), engine('dkrz', 'f.variable=tas').counts.experiment.historical);
});

test('a shared URL reloads the same state', async () => {
  const qs = 'site=dkrz&f.table=Amon&f.variable=tas&from=2000-01-01&page=1';
  await page.goto(`${base}?${qs}`);
  const want = engine('dkrz', 'f.table=Amon&f.variable=tas&from=2000-01-01');
  await expectTotal(want.total);
  assert.equal(await page.locator('fieldset[data-facet=variable] input[data-value=tas]').isChecked(), true);
  assert.equal(await page.locator('#from').inputValue(), '2000-01-01');
  const ids = await page.locator('.row .id').allTextContents();
  assert.deepEqual(ids, want.page);
  await page.reload();
  await expectTotal(want.total);
  assert.deepEqual(await page.locator('.row .id').allTextContents(), ids);
});

test('item view: properties, files with sizes, checksums and working download links', async () => {
  await page.goto(`${base}?f.variable=tas&f.experiment=historical`);
  const want = engine('ceda', 'f.variable=tas&f.experiment=historical');
  await expectTotal(want.total);
  const id = want.page[0];
  await page.locator('.row .id', { hasText: id }).click();
  await page.locator('h2.item-id', { hasText: id }).waitFor({ timeout: TIMEOUT });
  const itemHref = params().get('item');
  assert.ok(itemHref.endsWith(`${id}.json`));
  const item = JSON.parse(readFileSync(join(www, 'ceda', itemHref), 'utf8'));
  const [name, asset] = Object.entries(item.assets)[0];
  const row = page.locator('table.files tr', { hasText: name });
  assert.match(await row.textContent(), new RegExp(asset['file:checksum']));
  assert.equal(await page.locator('table.props tr', { hasText: 'cmip6:variable_id' }).locator('td').textContent(), 'tas');
  assert.ok(await page.locator('a[rel=cite-as]').getAttribute('href'));
  const [download] = await Promise.all([page.waitForEvent('download'), row.locator('a.download').first().click()]);
  const path = await download.path();
  assert.equal(statSync(path).size, asset['file:size']);
  // The STAC JSON link is the item document itself.
  const json = await (await page.request.get(await page.locator('a', { hasText: 'STAC JSON' }).getAttribute('href'))).json();
  assert.equal(json.id, id);
  // Back returns to the results.
  await page.goBack();
  await expectTotal(want.total);
});

test('item view shows Kerchunk references with a Python snippet when the item has them', async () => {
  const want = engine('ceda', 'f.variable=pr');
  const id = want.page[0];
  // Give one item a references asset, as the Kerchunk stage writes it.
  const path = (function find(dir) {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) { const r = find(p); if (r) return r; } else if (e.name === `${id}.json`) return p;
    }
  })(join(www, 'ceda'));
  const item = JSON.parse(readFileSync(path, 'utf8'));
  item.assets['kerchunk'] = { href: `./${id}.kerchunk.json`, type: 'application/json', roles: ['references'], title: 'Kerchunk references' };
  writeFileSync(path, JSON.stringify(item));
  const rel = path.slice(join(www, 'ceda').length + 1);
  await page.goto(`${base}?item=${encodeURIComponent(rel)}`);
  const snippet = page.locator('pre.snippet');
  await snippet.waitFor({ timeout: TIMEOUT });
  const text = await snippet.textContent();
  assert.match(text, /xr\.open_dataset\(/);
  assert.ok(text.includes(`${base}ceda/${dirname(rel)}/${id}.kerchunk.json`), text);
});

test('paging moves through results and lands in the URL', async () => {
  await page.goto(base);
  const all = engine('ceda', '');
  await expectTotal(all.total);
  const first = await page.locator('.row .id').allTextContents();
  assert.deepEqual(first, all.page);
  await page.locator('.pager button', { hasText: 'Next' }).click();
  await page.locator('.pager', { hasText: 'page 2 of' }).waitFor({ timeout: TIMEOUT });
  assert.equal(params().get('page'), '2');
  const second = engine('ceda', 'page=2');
  await page.locator('.results[data-state=ready] .row .id', { hasText: second.page[0] }).waitFor({ timeout: TIMEOUT });
  assert.deepEqual(await page.locator('.row .id').allTextContents(), second.page);
  await page.goBack();
  await page.locator('.pager', { hasText: 'page 1 of' }).waitFor({ timeout: TIMEOUT });
  assert.equal(await page.locator('.pager button', { hasText: 'Previous' }).isDisabled(), true);
});

test('a missing index file gives a clear message', async () => {
  await page.goto(`${base}?site=broken`);
  const alert = page.locator('[role=alert]');
  await alert.waitFor({ timeout: TIMEOUT });
  assert.match(await alert.textContent(), /Could not load the search index .*index\/index\.json \(HTTP 404\)/);
  // One posting file gone (a half-copied site): the query that needs it says which.
  const meta = JSON.parse(readFileSync(join(www, 'dkrz/index/index.json'), 'utf8'));
  const f = meta.facets.findIndex(x => x.name === 'variable');
  const v = meta.facets[f].values.indexOf('pr');
  rmSync(join(www, `dkrz/index/f/${f}-${v}.bin`));
  await page.goto(`${base}?site=dkrz&f.variable=pr`);
  await alert.waitFor({ timeout: TIMEOUT });
  assert.match(await alert.textContent(), new RegExp(`Could not load the index file f/${f}-${v}\\.bin \\(HTTP 404\\)`));
});

test('phone-sized screen: no sideways scrolling, filters below results', async () => {
  await page.setViewportSize({ width: 375, height: 740 });
  await page.goto(`${base}?f.variable=tas`);
  await expectTotal(engine('ceda', 'f.variable=tas').total);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `page is ${overflow}px wider than the screen`);
  const results = await page.locator('.results').boundingBox();
  const filters = await page.locator('.filters').boundingBox();
  assert.ok(results.y < filters.y);
  await page.setViewportSize({ width: 1200, height: 900 });
});

test('facet checkboxes work from the keyboard', async () => {
  await page.goto(base);
  await expectTotal(engine('ceda', '').total);
  await page.locator('fieldset[data-facet=table] input[data-value=Omon]').focus();
  await page.keyboard.press('Space');
  await expectTotal(engine('ceda', 'f.table=Omon').total);
});

test('common words are read as far as the page needs: "at least N", then Count all', async () => {
  const qs = 'q=a+s+t';
  const partial = engine('synthetic', qs);
  const exact = JSON.parse(run(search, [join(www, 'synthetic', 'index'), qs, '--exact']));
  assert.equal(partial.exact, false, 'the query reads the segmented postings in part');
  assert.ok(partial.total < exact.total);
  await page.goto(`${base}?site=synthetic&${qs}`);
  const atLeast = `at least ${partial.total.toLocaleString('en-US')} items`;
  await page.locator('.results[data-state=ready] #total', { hasText: atLeast }).waitFor({ timeout: TIMEOUT });
  assert.deepEqual(await page.locator('.row .id').allTextContents(), exact.page);
  assert.equal(await page.locator('.pager button', { hasText: 'Next' }).isDisabled(), false);
  await page.locator('.filters[data-counts=ready]').waitFor({ timeout: TIMEOUT });
  assert.match(await page.locator('fieldset[data-facet=variable] .note').textContent(), /not computed/);
  await page.locator('button.count-all').click();
  await expectTotal(exact.total);
  assert.equal(await page.locator('button.count-all').count(), 0);
  assert.deepEqual(await page.locator('.row .id').allTextContents(), exact.page);
  const [value, n] = Object.entries(exact.counts.variable).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))[0];
  assert.equal(await count('variable', value), n);
});

test('the page computes a query\'s first index files like the engine (viewer/index.html firstFiles)', async () => {
  await page.goto(`${base}?site=synthetic`);
  await page.locator('.results[data-state=ready]').waitFor({ timeout: TIMEOUT });
  const queries = [
    '', 'page=2', 'page=0', 'page=x', 'page=%2B3', 'page=100000',
    'f.variable=tas', 'f.variable=tas&f.variable=pr', 'f.variable=nosuch', 'f.nosuch=x', 'f.latest=true',
    'f.latest=true&f.variable=tas&f.experiment=ssp585', 'f.realm=atmos&f.frequency=mon', 'f.frequency=mon&q=air',
    'q=sea+surface+temperature', 'q=CMIP6.ScenarioMIP', 'q=a+s+t', 'q=Zz9+zz9', 'q=+', 'q=precip&f.experiment=historical',
    'from=1850-01-01&to=1900-12-31', 'from=2015-1-1', 'to=2015-12-31T23:00:00-02:00', 'to=2015-12-31T23:00:00%2B01:00',
    'from=2000-01-01T00:00:00Z', 'from=1999-12-31t23:59:59.5z', 'from=2015-02-31', 'to=2015-13-01', 'to=0001-01-01',
    'from=bad', 'from=2015-01-01&from=', 'to=2020-06-01+12:30', 'to=2020-06-01T12', 'from=2014-12-31T23:59:60',
    'bbox=-10,35,30,70', 'bbox=170,-10,-170,10', 'bbox=1,2,3', 'bbox=0,10,5,5', 'bbox=-10,35,x,30,70', 'bbox=-10,35,30,70&bbox=1,2',
    'bbox=-10,35,30,70&f.variable=tas', 'f.experiment=historical&f.table=Amon&from=2000-01-01', 'f.grid=gr&f.frequency=mon&page=4',
  ];
  const meta = JSON.parse(readFileSync(join(www, 'synthetic/index/index.json'), 'utf8'));
  // Every facet filter deferred that can be (0), some (a middle size), and the default.
  const sizes = meta.facets.flatMap(f => f.sizes || []).sort((a, b) => a - b);
  for (const defer of [undefined, 0, sizes[Math.floor(sizes.length * 0.9)]]) {
    for (const qs of queries) {
      const got = await page.evaluate(([m, q, d]) => window.fedstacFirstFiles(m, '?' + q, d), [meta, qs, defer]);
      const args = [join(www, 'synthetic', 'index'), qs];
      if (defer !== undefined) args.push(`--defer-bytes=${defer}`);
      const want = JSON.parse(run(search, args)).first_files;
      assert.deepEqual([...got].sort(), [...want].sort(), `${qs} (defer ${defer})`);
    }
  }
  // What it cannot mirror exactly it leaves to the viewer.
  assert.deepEqual(await page.evaluate(([m]) => window.fedstacFirstFiles(m, '?q=temp%C3%A9rature'), [meta]), []);
});

test('the page prefetches the query\'s first files while the wasm loads, and the viewer takes every one', async () => {
  for (const qs of ['', 'page=3', 'f.variable=tas&f.experiment=historical', 'f.latest=true&f.variable=tas&f.experiment=ssp585',
    'q=sea+surface+temperature', 'from=2015-01-01&to=2020-12-31', 'bbox=-10,35,30,70&f.variable=tas']) {
    await page.goto(`${base}?site=synthetic&${qs}`);
    await page.locator('.results[data-state=ready]').waitFor({ timeout: TIMEOUT });
    await page.locator('.filters[data-counts=ready]').waitFor({ timeout: TIMEOUT });
    const { prefetched, pending } = await page.evaluate(() => ({ prefetched: window.fedstacPrefetched, pending: Object.keys(window.fedstacPrefetch) }));
    const want = engine('synthetic', qs).first_files.map(p => `${base}synthetic/index/${p}`);
    assert.ok(want.length > 0, qs);
    assert.deepEqual([...prefetched].sort(), [...want].sort(), qs);
    assert.deepEqual(prefetched.filter(u => pending.includes(u)), [], `${qs}: prefetched but not taken`);
  }
});
