//! fedstac viewer: faceted search over a fedstac site's static index, in the
//! browser (Leptos CSR). The query engine and the index format are the
//! `fedstac-index` crate's; this crate fetches the files each step asks for,
//! renders, and keeps the whole state in the URL.
//!
//! Sites: `sites.json` beside the page (`[{"name", "title", "href"}]`, hrefs
//! relative to the page) lists the sites to choose from (`?site=<name>`);
//! without it the page is taken to sit at a site's root (`./index/`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use fedstac_index::query::{format_time, parse_time, CountPlan, Files, Filters, Query};
use fedstac_index::{codec, Doc, Engine, Meta, PAGE_SIZE};
use leptos::prelude::*;
use leptos::task::spawn_local;
use serde::Deserialize;
use wasm_bindgen::{closure::Closure, JsCast};

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct SiteEntry {
    name: String,
    #[serde(default)]
    title: String,
    /// The site's root, relative to the page (`ceda/`).
    href: String,
}

/// A loaded site: its engine and the index files fetched so far.
struct SiteData {
    base: String,
    engine: Engine,
    files: RefCell<HashMap<String, Vec<u8>>>,
}

struct Store<'a>(std::cell::Ref<'a, HashMap<String, Vec<u8>>>);

impl Files for Store<'_> {
    fn get(&self, path: &str) -> Option<&[u8]> {
        self.0.get(path).map(Vec::as_slice)
    }
}

thread_local! {
    static SITES: RefCell<HashMap<String, Rc<SiteData>>> = RefCell::new(HashMap::new());
    static FETCHED: RefCell<(u64, u64)> = const { RefCell::new((0, 0)) };
}

/// What the result area shows.
#[derive(Debug, Clone, Default, PartialEq)]
struct Outcome {
    /// The number of results when `exact`, else those found so far (a lower bound).
    total: u64,
    exact: bool,
    /// Bytes of common words' postings not read yet (the page needed no more):
    /// what "Count all" reads for the exact total and the live counts; 0 when every result is known.
    rest_bytes: u64,
    rows: Vec<Doc>,
    /// Bytes and requests this search fetched (up to its counts), and the time to its rows.
    bytes: u64,
    requests: u64,
    ms: f64,
    /// When the results were ready (ms since navigation start), for the benchmark.
    ready_at: f64,
}

/// The live facet counts, which fill in after the result rows.
#[derive(Debug, Clone, Default, PartialEq)]
struct Live {
    /// Per facet: live counts per value (None: too broad to count, or the results are not complete).
    counts: Vec<Option<Vec<u32>>>,
    /// The counts are those of the current results.
    ready: bool,
    /// The results they were computed for are complete.
    complete: bool,
    /// Time from query to counts.
    ms: f64,
}

#[derive(Debug, Clone, PartialEq)]
enum Status {
    Loading,
    Ready,
    Failed(String),
}

/// The URL's state.
#[derive(Debug, Clone, Default, PartialEq)]
struct State {
    site: Option<String>,
    query: Query,
    /// Item JSON open in the item view (site-relative).
    item: Option<String>,
}

fn window() -> web_sys::Window {
    web_sys::window().expect("a browser window")
}

fn now() -> f64 {
    window().performance().map(|p| p.now()).unwrap_or(0.0)
}

fn read_url() -> State {
    let search = window().location().search().unwrap_or_default();
    let params = web_sys::UrlSearchParams::new_with_str(&search).expect("URLSearchParams");
    let mut pairs: Vec<(String, String)> = Vec::new();
    let entries = js_sys::try_iter(&params).ok().flatten();
    if let Some(it) = entries {
        for entry in it.flatten() {
            let arr: js_sys::Array = entry.unchecked_into();
            pairs.push((arr.get(0).as_string().unwrap_or_default(), arr.get(1).as_string().unwrap_or_default()));
        }
    }
    let get = |k: &str| pairs.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone()).filter(|v| !v.is_empty());
    State { site: get("site"), item: get("item"), query: Query::from_params(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))) }
}

fn url_of(state: &State) -> String {
    let params = web_sys::UrlSearchParams::new().expect("URLSearchParams");
    if let Some(s) = &state.site {
        params.append("site", s);
    }
    for (k, v) in state.query.to_params() {
        params.append(&k, &v);
    }
    if let Some(i) = &state.item {
        params.append("item", i);
    }
    let s: String = params.to_string().into();
    let path = window().location().pathname().unwrap_or_default();
    if s.is_empty() {
        path
    } else {
        format!("{path}?{s}")
    }
}

/// Resolves `rel` against the page's URL.
fn resolve(rel: &str) -> String {
    let base = window().document().and_then(|d| d.base_uri().ok().flatten()).unwrap_or_default();
    web_sys::Url::new_with_base(rel, &base).map(|u| u.href()).unwrap_or_else(|_| rel.to_string())
}

/// A fetch the page's inline script started while the viewer loaded (index.html):
/// a promise of `{ok, status, buf}`, taken once.
fn take_prefetched(url: &str) -> Option<js_sys::Promise> {
    let pre = js_sys::Reflect::get(&window(), &"fedstacPrefetch".into()).ok().filter(|p| p.is_object())?;
    let p = js_sys::Reflect::get(&pre, &url.into()).ok().filter(|p| !p.is_undefined())?;
    let _ = js_sys::Reflect::delete_property(pre.unchecked_ref::<js_sys::Object>(), &url.into());
    p.dyn_into().ok()
}

async fn fetch_bytes(url: &str) -> Result<Vec<u8>, String> {
    let bytes = if let Some(pre) = take_prefetched(url) {
        let v = wasm_bindgen_futures::JsFuture::from(pre).await.map_err(|e| format!("network error ({})", js_error(&e)))?;
        let field = |k: &str| js_sys::Reflect::get(&v, &k.into()).unwrap_or(wasm_bindgen::JsValue::UNDEFINED);
        if field("ok").as_bool() != Some(true) {
            return Err(format!("HTTP {}", field("status").as_f64().unwrap_or(0.0)));
        }
        js_sys::Uint8Array::new(&field("buf")).to_vec()
    } else {
        let resp = wasm_bindgen_futures::JsFuture::from(window().fetch_with_str(url)).await.map_err(|e| format!("network error ({})", js_error(&e)))?;
        let resp: web_sys::Response = resp.unchecked_into();
        if !resp.ok() {
            return Err(format!("HTTP {}", resp.status()));
        }
        let buf = wasm_bindgen_futures::JsFuture::from(resp.array_buffer().map_err(|e| js_error(&e))?).await.map_err(|e| js_error(&e))?;
        js_sys::Uint8Array::new(&buf).to_vec()
    };
    FETCHED.with(|f| {
        let mut f = f.borrow_mut();
        f.0 += bytes.len() as u64;
        f.1 += 1;
    });
    Ok(bytes)
}

fn js_error(e: &wasm_bindgen::JsValue) -> String {
    e.as_string().or_else(|| js_sys::JSON::stringify(e).ok().and_then(|s| s.as_string())).unwrap_or_else(|| "unknown error".into())
}

/// Fetches the index files not yet held, all at once.
async fn fetch_index_files(site: &Rc<SiteData>, paths: Vec<String>) -> Result<(), String> {
    let missing: Vec<String> = {
        let files = site.files.borrow();
        paths.into_iter().filter(|p| !files.contains_key(p)).collect()
    };
    let futures = missing.iter().map(|p| {
        let url = format!("{}index/{p}", site.base);
        async move {
            let raw = fetch_bytes(&url).await.map_err(|e| format!("Could not load the index file {p} ({e}). The site's search index may be missing, incomplete or being rebuilt."))?;
            let plain = codec::inflate(&raw).map_err(|e| format!("The index file {p} is damaged: {e}"))?;
            Ok::<_, String>((p.clone(), plain))
        }
    });
    let results = futures::future::join_all(futures).await;
    let mut files = site.files.borrow_mut();
    for r in results {
        let (p, bytes) = r?;
        files.insert(p, bytes);
    }
    Ok(())
}

async fn load_site(base: String) -> Result<Rc<SiteData>, String> {
    if let Some(s) = SITES.with(|s| s.borrow().get(&base).cloned()) {
        return Ok(s);
    }
    let url = format!("{base}index/index.json");
    let bytes = fetch_bytes(&url).await.map_err(|e| format!("Could not load the search index {url} ({e}). Was the site built with a fedstac that writes one?"))?;
    let engine = Engine::from_json(&bytes).map_err(|e| format!("The search index {url} cannot be read: {e}"))?;
    let site = Rc::new(SiteData { base: base.clone(), engine, files: RefCell::new(HashMap::new()) });
    SITES.with(|s| s.borrow_mut().insert(base, site.clone()));
    Ok(site)
}

/// Evaluates a query up to its results: the filter files, then deferred
/// filters and more text segments until the engine needs nothing more (it
/// stops once the page is filled, unless `exhaustive`).
async fn evaluate(site: &Rc<SiteData>, q: &Query, exhaustive: bool) -> Result<Filters, String> {
    let engine = &site.engine;
    let e = |e: fedstac_index::codec::FormatError| e.to_string();
    fetch_index_files(site, engine.first_files(q)).await?;
    let wanted = ((q.page + 1) * PAGE_SIZE) as u64;
    loop {
        let mut filters = engine.filters(q, &Store(site.files.borrow())).map_err(e)?;
        let deferred = engine.deferred_files(&filters);
        if !deferred.is_empty() {
            // The page's likely rows come in the same round, not in one more after it
            // (fedstac_index::query::evaluate does the same natively).
            let mut round = deferred;
            round.extend(engine.likely_page_files(q, &filters));
            fetch_index_files(site, round).await?;
        }
        engine.resolve(&mut filters, &Store(site.files.borrow())).map_err(e)?;
        let mut more = engine.more_files(q, &filters, &Store(site.files.borrow()), wanted, exhaustive).map_err(e)?;
        if more.is_empty() {
            return Ok(filters);
        }
        more.extend(engine.likely_page_files(q, &filters));
        fetch_index_files(site, more).await?;
    }
}

/// Runs a search: result rows first (`on_rows`), then the live counts (`on_counts`), whose files are fetched alongside the rows.
async fn search(site: Rc<SiteData>, q: Query, exhaustive: bool, on_rows: impl Fn(Outcome), on_counts: impl Fn(Live, u64, u64)) -> Result<(), String> {
    let started = now();
    let before = FETCHED.with(|f| *f.borrow());
    let engine = &site.engine;
    let filters = evaluate(&site, &q, exhaustive).await?;
    let results = filters.results();
    let (total, exact) = match filters.total() {
        Some(t) => (t, true),
        None => (results.len(), false),
    };
    let complete = filters.counts_complete();
    let rest_bytes = if complete { 0 } else { engine.rest_bytes(&q, &filters, &Store(site.files.borrow())).map_err(|e| e.to_string())? };
    let plans: Vec<CountPlan> = engine.count_plans(&q, &filters);
    let docs = Engine::page_docs(&results, q.page);
    let rows = async {
        fetch_index_files(&site, engine.page_files(&docs)).await?;
        let rows = engine.rows(&docs, &Store(site.files.borrow())).map_err(|e| e.to_string())?;
        let after = FETCHED.with(|f| *f.borrow());
        on_rows(Outcome { total, exact, rest_bytes, rows, bytes: after.0 - before.0, requests: after.1 - before.1, ms: now() - started, ready_at: now() });
        Ok::<_, String>(())
    };
    let counts = async {
        fetch_index_files(&site, Engine::count_files(&plans)).await?;
        Ok::<_, String>(())
    };
    let (r, c) = futures::future::join(rows, counts).await;
    r?;
    c?;
    let counts = engine.counts(&plans, &Store(site.files.borrow())).map_err(|e| e.to_string())?;
    let after = FETCHED.with(|f| *f.borrow());
    on_counts(Live { counts, ready: true, complete, ms: now() - started }, after.0 - before.0, after.1 - before.1);
    Ok(())
}

fn main() {
    console_error_panic_hook();
    // Mount once the page's first fetches are in (fedstacReady, index.html). Mounted earlier,
    // the page's first style, layout and paint ran before the query's files reached the
    // viewer, which made the landing query's first results 25-38 ms later at 10M items
    // (median of 7 cold loads, 3 rounds; headless Chromium, bench/search).
    let ready = js_sys::Reflect::get(&window(), &"fedstacReady".into()).ok().and_then(|p| p.dyn_into::<js_sys::Promise>().ok());
    match ready {
        Some(ready) => wasm_bindgen_futures::spawn_local(async move {
            let _ = wasm_bindgen_futures::JsFuture::from(ready).await;
            leptos::mount::mount_to_body(App);
        }),
        None => leptos::mount::mount_to_body(App),
    }
}

fn console_error_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        web_sys::console::error_1(&format!("fedstac viewer: {info}").into());
    }));
}

#[component]
fn App() -> impl IntoView {
    let state = RwSignal::new(read_url());
    let sites: RwSignal<Option<Vec<SiteEntry>>> = RwSignal::new(None);
    let meta: RwSignal<Option<Arc<Meta>>> = RwSignal::new(None);
    let status = RwSignal::new(Status::Loading);
    let outcome = RwSignal::new(Outcome::default());
    let live = RwSignal::new(Live::default());
    // The query (without its page) whose total the user asked to count exactly.
    let exact_for: RwSignal<Option<Query>> = RwSignal::new(None);
    let generation = StoredValue::new(0u64);

    // Back/forward: the URL is the state.
    let on_pop = Closure::<dyn Fn(web_sys::PopStateEvent)>::new(move |_| state.set(read_url()));
    window().add_event_listener_with_callback("popstate", on_pop.as_ref().unchecked_ref()).expect("popstate listener");
    on_pop.forget();

    // Which sites there are (sites.json beside the page, else the page is a site root).
    spawn_local(async move {
        let list = match fetch_bytes(&resolve("sites.json")).await {
            Ok(bytes) => serde_json::from_slice::<Vec<SiteEntry>>(&bytes).unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        sites.set(Some(list));
    });

    // The chosen site's base URL.
    let base = Memo::new(move |_| {
        let list = sites.get()?;
        let wanted = state.with(|s| s.site.clone());
        if list.is_empty() {
            return Some(resolve("./"));
        }
        let entry = wanted.and_then(|w| list.iter().find(|s| s.name == w).cloned()).unwrap_or_else(|| list[0].clone());
        let mut href = resolve(&entry.href);
        if !href.ends_with('/') {
            href.push('/');
        }
        Some(href)
    });

    Effect::new(move |_| {
        let Some(base) = base.get() else { return };
        meta.set(None);
        // Counts of another site's values must not meet this site's facets.
        outcome.set(Outcome::default());
        live.set(Live::default());
        status.set(Status::Loading);
        spawn_local(async move {
            match load_site(base).await {
                Ok(site) => meta.set(Some(Arc::new(site.engine.meta.clone()))),
                Err(e) => status.set(Status::Failed(e)),
            }
        });
    });

    // Search whenever the query or the site changes; stale answers are dropped.
    Effect::new(move |_| {
        let q = state.with(|s| s.query.clone());
        let exhaustive = exact_for.with(|e| e.as_ref().is_some_and(|e| *e == Query { page: 0, ..q.clone() }));
        let (Some(base), Some(_)) = (base.get(), meta.get()) else { return };
        let id = generation.get_value() + 1;
        generation.set_value(id);
        status.set(Status::Loading);
        live.update(|l| l.ready = false);
        spawn_local(async move {
            let current = move || generation.get_value() == id;
            let result = match load_site(base).await {
                Ok(site) => {
                    search(
                        site,
                        q,
                        exhaustive,
                        move |o| {
                            if current() {
                                outcome.set(o);
                                status.set(Status::Ready);
                            }
                        },
                        move |l, bytes, requests| {
                            if current() {
                                live.set(l);
                                outcome.update(|o| {
                                    o.bytes = bytes;
                                    o.requests = requests;
                                });
                            }
                        },
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            if let (Err(e), true) = (result, current()) {
                status.set(Status::Failed(e));
            }
        });
    });
    let count_all = Callback::new(move |_: ()| exact_for.set(Some(Query { page: 0, ..state.get_untracked().query })));

    // Every user action goes through here: new state, new history entry.
    let navigate = move |next: State| {
        let url = url_of(&next);
        let _ = window().history().map(|h| h.push_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(&url)));
        state.set(next);
    };
    let set_query = move |f: &dyn Fn(&mut Query)| {
        let mut next = state.get_untracked();
        f(&mut next.query);
        next.query.page = 0;
        next.item = None;
        navigate(next);
    };
    provide_context(Nav { state, navigate: Callback::new(navigate) });

    let title = move || meta.with(|m| m.as_ref().map(|m| m.site.title.clone()).unwrap_or_else(|| "fedstac search".into()));
    view! {
        <header class="top">
            <h1><a href="?" on:click=move |ev| { ev.prevent_default(); navigate(State { site: state.get_untracked().site, ..Default::default() }) }>{title}</a></h1>
            <SitePicker sites=sites state=state/>
            {move || base.get().map(|b| view! { <a class="browse" href=format!("{b}catalog.html")>"Browse the catalogue"</a> })}
            <form class="text" role="search" on:submit=move |ev| ev.prevent_default()>
                <label for="q" class="sr">"Search text"</label>
                <input id="q" type="search" placeholder="Search ids, titles, variable names…" autocomplete="off"
                    prop:value=move || { state.with(|s| s.query.text.clone()) }
                    on:change=move |ev| { let v = event_target_value(&ev); set_query(&|q| q.text = v.clone()) }/>
                <button type="submit">"Search"</button>
            </form>
        </header>
        {move || match status.get() {
            Status::Failed(e) => view! { <p class="error" role="alert">{e}</p> }.into_any(),
            _ => ().into_any(),
        }}
        {move || if state.with(|s| s.item.is_some()) {
            view! { <ItemView base=base/> }.into_any()
        } else {
            view! {
                <main class="layout">
                    <aside class="filters" aria-label="Filters" data-counts=move || if live.with(|l| l.ready) { "ready" } else { "loading" }>
                        <TimeFilter state=state/>
                        <BboxFilter state=state/>
                        <Facets meta=meta live=live state=state/>
                    </aside>
                    <Results outcome=outcome live=live status=status state=state count_all=count_all/>
                </main>
            }.into_any()
        }}
    }
}

#[derive(Clone, Copy)]
struct Nav {
    state: RwSignal<State>,
    navigate: Callback<State>,
}

fn nav() -> Nav {
    expect_context::<Nav>()
}

fn update_query(f: impl Fn(&mut Query)) {
    let n = nav();
    let mut next = n.state.get_untracked();
    f(&mut next.query);
    next.query.page = 0;
    next.item = None;
    n.navigate.run(next);
}

#[component]
fn SitePicker(sites: RwSignal<Option<Vec<SiteEntry>>>, state: RwSignal<State>) -> impl IntoView {
    move || {
        let list = sites.get().unwrap_or_default();
        if list.len() < 2 {
            return ().into_any();
        }
        let current = state.with(|s| s.site.clone()).unwrap_or_else(|| list[0].name.clone());
        view! {
            <label class="site">"Site "
                <select on:change=move |ev| {
                    let v = event_target_value(&ev);
                    let mut next = state.get_untracked();
                    next.site = Some(v);
                    next.item = None;
                    next.query.page = 0;
                    nav().navigate.run(next);
                }>
                    {list.into_iter().map(|s| {
                        let selected = s.name == current;
                        let label = if s.title.is_empty() { s.name.clone() } else { s.title.clone() };
                        view! { <option value=s.name.clone() selected=selected>{label}</option> }
                    }).collect_view()}
                </select>
            </label>
        }
        .into_any()
    }
}

/// Values shown per facet before "more".
const SHOWN_VALUES: usize = 8;

#[component]
fn Facets(meta: RwSignal<Option<Arc<Meta>>>, live: RwSignal<Live>, state: RwSignal<State>) -> impl IntoView {
    move || {
        let Some(m) = meta.get() else { return ().into_any() };
        (0..m.facets.len()).map(|i| view! { <Facet meta=m.clone() index=i live=live state=state/> }).collect_view().into_any()
    }
}

#[component]
fn Facet(meta: Arc<Meta>, index: usize, live: RwSignal<Live>, state: RwSignal<State>) -> impl IntoView {
    let expanded = RwSignal::new(false);
    let facet = meta.facets[index].clone();
    let name = facet.name.clone();
    let label = facet.label.clone();
    let body = move || {
        let counts = live.with(|l| l.counts.get(index).cloned().flatten());
        let selected: Vec<String> = state.with(|s| s.query.facets.get(&facet.name).cloned().unwrap_or_default());
        let broad = counts.is_none() && !live.with(|l| l.counts.is_empty());
        let partial = !live.with(|l| l.complete);
        // Selected values first, then by count (or name when counts are unknown).
        let mut values: Vec<(String, Option<u32>, bool)> = facet
            .values
            .iter()
            .enumerate()
            .map(|(v, name)| (name.clone(), counts.as_ref().map(|c| c.get(v).copied().unwrap_or(0)).or_else(|| if broad { None } else { Some(facet.counts[v]) }), selected.contains(name)))
            .filter(|(_, n, sel)| *sel || n.is_none_or(|n| n > 0))
            .collect();
        for s in &selected {
            if !values.iter().any(|(v, _, _)| v == s) {
                values.push((s.clone(), Some(0), true));
            }
        }
        values.sort_by(|a, b| b.2.cmp(&a.2).then(b.1.unwrap_or(0).cmp(&a.1.unwrap_or(0))).then(a.0.cmp(&b.0)));
        let more = values.len() > SHOWN_VALUES;
        if !expanded.get() {
            values.truncate(SHOWN_VALUES.max(selected.len()));
        }
        let fname = facet.name.clone();
        view! {
            <ul>
                {values.into_iter().map(|(value, count, checked)| {
                    let fname = fname.clone();
                    let v2 = value.clone();
                    view! {
                        <li><label>
                            <input type="checkbox" prop:checked=checked data-value=value.clone() on:change=move |_| {
                                let (f, v) = (fname.clone(), v2.clone());
                                update_query(move |q| {
                                    let list = q.facets.entry(f.clone()).or_default();
                                    if let Some(i) = list.iter().position(|x| *x == v) { list.remove(i); } else { list.push(v.clone()); }
                                    if list.is_empty() { q.facets.remove(&f); }
                                })
                            }/>
                            <span class="value">{value}</span>
                            <span class="count">{count.map(|n| n.to_string()).unwrap_or_default()}</span>
                        </label></li>
                    }
                }).collect_view()}
            </ul>
            {if broad && partial {
                view! { <p class="note">"Counts are not computed: common words were read only as far as the result page needs."</p> }.into_any()
            } else if broad {
                view! { <p class="note">"Counts are not computed for this broad combination."</p> }.into_any()
            } else { ().into_any() }}
            {if more {
                view! { <button type="button" class="more" on:click=move |_| expanded.update(|e| *e = !*e)>{move || if expanded.get() { "fewer" } else { "more…" }}</button> }.into_any()
            } else { ().into_any() }}
        }
    };
    view! {
        <fieldset class="facet" data-facet=name>
            <legend>{label}</legend>
            {body}
        </fieldset>
    }
}

#[component]
fn TimeFilter(state: RwSignal<State>) -> impl IntoView {
    let from = move || state.with(|s| s.query.from.map(|t| format_time(t)[..10].to_string()).unwrap_or_default());
    let to = move || state.with(|s| s.query.to.map(|t| format_time(t)[..10].to_string()).unwrap_or_default());
    view! {
        <fieldset class="time">
            <legend>"Time"</legend>
            <label>"From " <input type="date" id="from" prop:value=from on:change=move |ev| {
                let v = event_target_value(&ev);
                update_query(move |q| q.from = parse_time(&v, false))
            }/></label>
            <label>"To " <input type="date" id="to" prop:value=to on:change=move |ev| {
                let v = event_target_value(&ev);
                update_query(move |q| q.to = parse_time(&v, true))
            }/></label>
            <p class="note">"Items whose time span overlaps this range."</p>
        </fieldset>
    }
}

/// Map coordinates (equirectangular, 360 × 180 user units) of a pointer event.
fn lon_lat(ev: &web_sys::PointerEvent) -> Option<(f64, f64)> {
    let el: web_sys::Element = ev.current_target()?.dyn_into().ok()?;
    let r = el.get_bounding_client_rect();
    if r.width() <= 0.0 || r.height() <= 0.0 {
        return None;
    }
    let lon = ((ev.client_x() as f64 - r.left()) / r.width() * 360.0 - 180.0).clamp(-180.0, 180.0);
    let lat = (90.0 - (ev.client_y() as f64 - r.top()) / r.height() * 180.0).clamp(-90.0, 90.0);
    Some((lon.round(), lat.round()))
}

/// A box being drawn: (start, current) map coordinates.
type Drag = ((f64, f64), (f64, f64));

#[component]
fn BboxFilter(state: RwSignal<State>) -> impl IntoView {
    let drag: RwSignal<Option<Drag>> = RwSignal::new(None);
    let current = move || state.with(|s| s.query.bbox);
    let shown = move || {
        drag.get().map(|((x0, y0), (x1, y1))| [x0.min(x1), y0.min(y1), x0.max(x1), y0.max(y1)]).or_else(current)
    };
    let inputs: [RwSignal<String>; 4] = std::array::from_fn(|_| RwSignal::new(String::new()));
    Effect::new(move |_| {
        let b = current();
        for (i, s) in inputs.iter().enumerate() {
            s.set(b.map(|b| format!("{}", b[i])).unwrap_or_default());
        }
    });
    let apply = move || {
        let v: Vec<f64> = inputs.iter().filter_map(|s| s.get_untracked().trim().parse().ok()).collect();
        if let [w, s, e, n] = v[..] {
            if s <= n && (-90.0..=90.0).contains(&s) && (-90.0..=90.0).contains(&n) && (-180.0..=180.0).contains(&w) && (-180.0..=180.0).contains(&e) {
                update_query(move |q| q.bbox = Some([w, s, e, n]));
            }
        }
    };
    let names = ["West", "South", "East", "North"];
    view! {
        <fieldset class="bbox">
            <legend>"Area"</legend>
            <svg class="map" viewBox="-180 -90 360 180" role="img" aria-label="World map: drag to draw a search box"
                on:pointerdown=move |ev: web_sys::PointerEvent| { if let Some(p) = lon_lat(&ev) { drag.set(Some((p, p))); } }
                on:pointermove=move |ev: web_sys::PointerEvent| { if let (Some((a, _)), Some(p)) = (drag.get_untracked(), lon_lat(&ev)) { drag.set(Some((a, p))); } }
                on:pointerup=move |ev: web_sys::PointerEvent| {
                    if let (Some((a, _)), Some(p)) = (drag.get_untracked(), lon_lat(&ev)) {
                        drag.set(None);
                        if (a.0 - p.0).abs() >= 1.0 && (a.1 - p.1).abs() >= 1.0 {
                            let b = [a.0.min(p.0), a.1.min(p.1), a.0.max(p.0), a.1.max(p.1)];
                            update_query(move |q| q.bbox = Some(b));
                        }
                    }
                }
                on:pointerleave=move |_| drag.set(None)>
                <rect x="-180" y="-90" width="360" height="180" class="sea"/>
                {(-150..=150).step_by(30).map(|x| view! { <line x1=x y1="-90" x2=x y2="90" class="grid"/> }).collect_view()}
                {(-60..=60).step_by(30).map(|y| view! { <line x1="-180" y1=y x2="180" y2=y class="grid"/> }).collect_view()}
                {CONTINENTS.iter().map(|pts| view! { <polygon points=pts.to_string() class="land"/> }).collect_view()}
                {move || shown().map(|b| {
                    let (x, y, w, h) = (b[0], -b[3], (b[2] - b[0]).max(0.5), (b[3] - b[1]).max(0.5));
                    view! { <rect x=x y=y width=w height=h class="box"/> }
                })}
            </svg>
            <div class="coords">
                {(0..4).map(|i| view! {
                    <label>{names[i]}" "<input type="number" step="any" size="5" prop:value=move || { inputs[i].get() }
                        on:input=move |ev| { inputs[i].set(event_target_value(&ev)) }
                        on:keydown=move |ev: web_sys::KeyboardEvent| { if ev.key() == "Enter" { ev.prevent_default(); apply() } }/></label>
                }).collect_view()}
            </div>
            <button type="button" on:click=move |_| apply()>"Apply box"</button>
            <button type="button" on:click=move |_| { update_query(|q| q.bbox = None) } disabled=move || { current().is_none() }>"Clear box"</button>
        </fieldset>
    }
}

/// Very coarse continent outlines (lon,-lat), enough to find one's way on the map.
const CONTINENTS: &[&str] = &[
    "-168,-66 -140,-70 -125,-50 -117,-32 -105,-20 -97,-16 -83,-9 -77,-8 -80,-25 -66,-45 -56,-52 -60,-60 -80,-73 -95,-78 -120,-70 -140,-60 -165,-60",
    "-80,-9 -77,-1 -80,2 -70,12 -50,1 -35,7 -39,13 -48,25 -58,38 -66,55 -74,52 -72,42 -70,30 -76,18 -81,8",
    "-10,-36 -5,-43 8,-44 30,-41 40,-47 60,-55 90,-50 110,-60 140,-70 180,-70 180,-65 160,-60 140,-40 130,-33 122,-30 120,-22 105,-10 100,-20 90,-22 77,-8 70,-20 57,-25 50,-30 35,-37 30,-31 10,-37 -5,-36",
    "-17,-21 -10,-5 10,-4 10,2 14,10 12,18 20,35 34,25 40,15 51,-11 43,-12 35,-23 32,-31 20,-32 10,-37",
    "113,22 115,34 122,34 130,32 142,38 153,28 146,19 136,12 129,15 122,18 115,22",
    "-45,-60 -20,-70 -20,-83 -60,-82 -73,-78 -55,-70",
    "-180,90 180,90 180,72 -180,72",
];

#[component]
fn Results(outcome: RwSignal<Outcome>, live: RwSignal<Live>, status: RwSignal<Status>, state: RwSignal<State>, count_all: Callback<()>) -> impl IntoView {
    let pages = move || outcome.with(|o| o.total.div_ceil(PAGE_SIZE as u64)).max(1);
    let exact = move || outcome.with(|o| o.exact);
    let page = move || state.with(|s| s.query.page) as u64;
    let go = move |p: usize| {
        let mut next = state.get_untracked();
        next.query.page = p;
        next.item = None;
        nav().navigate.run(next);
    };
    let state_attr = move || match status.get() {
        Status::Loading => "loading",
        Status::Ready => "ready",
        Status::Failed(_) => "failed",
    };
    view! {
        <section class="results" aria-live="polite" data-state=state_attr>
            <Chips state=state/>
            <p class="total" id="total" data-exact=move || { exact().to_string() }>{move || {
                let o = outcome.get();
                let n = format!("{} item{}", group(o.total), if o.total == 1 { "" } else { "s" });
                if o.exact { n } else { format!("at least {n}") }
            }}</p>
            // Also offered when the total is exact (one common word) but the live counts still need the rest.
            {move || outcome.with(|o| (o.rest_bytes > 0).then(|| {
                let label = format!("Count all ({:.0} KB more)", o.rest_bytes as f64 / 1024.0);
                let note = if o.exact {
                    "Common words are read only as far as this page needs: the total is exact, the facet counts need the rest. "
                } else {
                    "Common words are read only as far as this page needs: these are the results found so far. "
                };
                view! {
                    <p class="partial">
                        <span class="note">{note}</span>
                        <button type="button" class="count-all" on:click=move |_| count_all.run(())>{label}</button>
                    </p>
                }
            }))}
            <ol class="rows" start=move || { (page() * PAGE_SIZE as u64 + 1).to_string() }>
                {move || outcome.get().rows.into_iter().map(|d| {
                    let href = d.href.clone();
                    let link = format!("?{}", url_of(&State { item: Some(href.clone()), ..state.get_untracked() }).split_once('?').map(|x| x.1.to_string()).unwrap_or_default());
                    view! {
                        <li class="row">
                            <a class="id" href=link on:click=move |ev| {
                                ev.prevent_default();
                                let mut next = state.get_untracked();
                                next.item = Some(href.clone());
                                nav().navigate.run(next);
                            }>{d.id.clone()}</a>
                            <span class="meta">{format!("{} – {}", day(d.start), day(d.end))}{if d.label.is_empty() { String::new() } else { format!(" · {}", d.label) }}</span>
                        </li>
                    }
                }).collect_view()}
            </ol>
            <nav class="pager" aria-label="Result pages">
                <button type="button" disabled=move || { page() == 0 } on:click=move |_| go(page() as usize - 1)>"← Previous"</button>
                <span>{move || format!("page {} of {}{}", page() + 1, if exact() { "" } else { "at least " }, pages())}</span>
                <button type="button" disabled=move || { page() + 1 >= pages() && exact() } on:click=move |_| go(page() as usize + 1)>"Next →"</button>
            </nav>
            <p class="stats" id="stats" data-counts-ms=move || { live.with(|l| format!("{:.1}", l.ms)) } data-bytes=move || { outcome.with(|o| o.bytes.to_string()) } data-requests=move || { outcome.with(|o| o.requests.to_string()) } data-ms=move || { outcome.with(|o| format!("{:.1}", o.ms)) } data-ready-at=move || { outcome.with(|o| format!("{:.1}", o.ready_at)) }>
                {move || outcome.with(|o| format!("{} index requests, {:.1} KB, results in {:.0} ms", o.requests, o.bytes as f64 / 1024.0, o.ms))}
                {move || live.with(|l| if l.ready { format!(", counts in {:.0} ms", l.ms) } else { String::new() })}
            </p>
        </section>
    }
}

/// Takes one filter out of a query.
type Remover = Rc<dyn Fn(&mut Query)>;

/// The active filters, each removable.
#[component]
fn Chips(state: RwSignal<State>) -> impl IntoView {
    move || {
        let q = state.with(|s| s.query.clone());
        if q.is_empty() {
            return ().into_any();
        }
        let mut chips: Vec<(String, Remover)> = Vec::new();
        for (f, values) in &q.facets {
            for v in values {
                let (f2, v2) = (f.clone(), v.clone());
                chips.push((
                    format!("{f}: {v}"),
                    Rc::new(move |q: &mut Query| {
                        if let Some(l) = q.facets.get_mut(&f2) {
                            l.retain(|x| *x != v2);
                        }
                        q.facets.retain(|_, l| !l.is_empty());
                    }),
                ));
            }
        }
        if !q.text.trim().is_empty() {
            chips.push((format!("text: {}", q.text), Rc::new(|q: &mut Query| q.text.clear())));
        }
        if q.from.is_some() || q.to.is_some() {
            let label = format!("time: {} – {}", q.from.map(day).unwrap_or_else(|| "…".into()), q.to.map(day).unwrap_or_else(|| "…".into()));
            chips.push((label, Rc::new(|q: &mut Query| {
                q.from = None;
                q.to = None;
            })));
        }
        if let Some(b) = q.bbox {
            chips.push((format!("area: {}, {}, {}, {}", b[0], b[1], b[2], b[3]), Rc::new(|q: &mut Query| q.bbox = None)));
        }
        view! {
            <ul class="chips" aria-label="Active filters">
                {chips.into_iter().map(|(label, remove)| {
                    let aria = format!("Remove {label}");
                    view! { <li><button type="button" aria-label=aria on:click=move |_| { let r = remove.clone(); update_query(move |q| r(q)) }>{label}" ×"</button></li> }
                }).collect_view()}
                <li><button type="button" class="clear" on:click=move |_| update_query(|q| *q = Query::default())>"Clear all"</button></li>
            </ul>
        }
        .into_any()
    }
}

fn day(ts: i64) -> String {
    format_time(ts).chars().take(10).collect()
}

fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
enum ItemState {
    Loading,
    Loaded(serde_json::Value),
    Failed(String),
}

#[component]
fn ItemView(base: Memo<Option<String>>) -> impl IntoView {
    let state = nav().state;
    let item = RwSignal::new(ItemState::Loading);
    Effect::new(move |_| {
        let (Some(base), Some(href)) = (base.get(), state.with(|s| s.item.clone())) else { return };
        item.set(ItemState::Loading);
        spawn_local(async move {
            let url = format!("{base}{href}");
            let r = match fetch_bytes(&url).await {
                Ok(b) => serde_json::from_slice(&b).map(ItemState::Loaded).unwrap_or_else(|e| ItemState::Failed(format!("{url} is not JSON: {e}"))),
                Err(e) => ItemState::Failed(format!("Could not load the item {url} ({e}).")),
            };
            item.set(r);
        });
    });
    let back = move |_| {
        let mut next = state.get_untracked();
        next.item = None;
        nav().navigate.run(next);
    };
    view! {
        <main class="item">
            <p><button type="button" class="back" on:click=back>"← Back to results"</button></p>
            {move || match item.get() {
                ItemState::Loading => view! { <p>"Loading…"</p> }.into_any(),
                ItemState::Failed(e) => view! { <p class="error" role="alert">{e}</p> }.into_any(),
                ItemState::Loaded(v) => item_body(&v, &base.get().unwrap_or_default(), &state.with(|s| s.item.clone().unwrap_or_default())).into_any(),
            }}
        </main>
    }
}

fn prop_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) => a.iter().map(prop_text).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

fn human_size(n: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut x = n as f64;
    let mut u = 0;
    while x >= 1000.0 && u + 1 < units.len() {
        x /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{x:.1} {}", units[u])
    }
}

fn item_body(v: &serde_json::Value, base: &str, href: &str) -> impl IntoView {
    let id = v["id"].as_str().unwrap_or_default().to_string();
    let json_url = format!("{base}{href}");
    let html_url = json_url.strip_suffix(".json").map(|s| format!("{s}.html")).unwrap_or_default();
    let links = v["links"].as_array().cloned().unwrap_or_default();
    let cite = links.iter().find(|l| l["rel"] == "cite-as").and_then(|l| l["href"].as_str()).map(str::to_string);
    let props: Vec<(String, String)> = v["properties"].as_object().map(|m| m.iter().map(|(k, v)| (k.clone(), prop_text(v))).collect()).unwrap_or_default();
    let assets = v["assets"].as_object().cloned().unwrap_or_default();
    let is_ref = |a: &serde_json::Value, name: &str| {
        let roles: Vec<&str> = a["roles"].as_array().map(|r| r.iter().filter_map(|x| x.as_str()).collect()).unwrap_or_default();
        roles.iter().any(|r| *r == "references" || *r == "kerchunk") || name.contains("kerchunk") || a["type"].as_str().is_some_and(|t| t.contains("kerchunk"))
    };
    let item_dir = json_url.rsplit_once('/').map(|(d, _)| format!("{d}/")).unwrap_or_default();
    let absolute = |h: &str| web_sys::Url::new_with_base(h, &item_dir).map(|u| u.href()).unwrap_or_else(|_| h.to_string());
    let mut files = Vec::new();
    let mut refs = Vec::new();
    for (name, a) in &assets {
        if is_ref(a, name) {
            // fedstac's `relative` URLs: template `u` is the sidecar's directory URL (sidecars.rs).
            let template = a["fedstac:dir_template"].as_str().filter(|t| t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')).map(str::to_string);
            refs.push((name.clone(), absolute(a["href"].as_str().unwrap_or_default()), template));
            continue;
        }
        let mut sites: Vec<(String, String)> = vec![(a["alternate:name"].as_str().unwrap_or("primary").to_string(), absolute(a["href"].as_str().unwrap_or_default()))];
        if let Some(alts) = a["alternate"].as_object() {
            for (k, alt) in alts {
                if let Some(h) = alt["href"].as_str() {
                    sites.push((alt["alternate:name"].as_str().unwrap_or(k).to_string(), absolute(h)));
                }
            }
        }
        files.push((name.clone(), a["file:size"].as_u64(), a["file:checksum"].as_str().unwrap_or("").to_string(), sites));
    }
    // Kerchunk references may also come as links.
    for l in &links {
        let rel = l["rel"].as_str().unwrap_or_default();
        if rel == "references" || rel.contains("kerchunk") || l["type"].as_str().is_some_and(|t| t.contains("kerchunk")) {
            if let Some(h) = l["href"].as_str() {
                refs.push((l["title"].as_str().unwrap_or("Kerchunk references").to_string(), absolute(h), None));
            }
        }
    }
    let title = v["properties"]["title"].as_str().unwrap_or(&id).to_string();
    view! {
        <article>
            <h2 class="item-id">{id.clone()}</h2>
            {(title != id).then(|| view! { <p>{title.clone()}</p> })}
            <ul class="links">
                <li><a href=json_url.clone() type="application/geo+json">"STAC JSON"</a></li>
                <li><a href=html_url>"HTML page"</a></li>
                {cite.map(|c| view! { <li><a href=c rel="cite-as">"Citation"</a></li> })}
            </ul>
            <h3>"Files"</h3>
            <div class="scroll"><table class="files">
                <thead><tr><th scope="col">"File"</th><th scope="col">"Size"</th><th scope="col">"Checksum (multihash)"</th><th scope="col">"Download"</th></tr></thead>
                <tbody>
                {files.into_iter().map(|(name, size, sum, sites)| view! {
                    <tr>
                        <td class="file">{name.clone()}</td>
                        <td>{size.map(human_size).unwrap_or_default()}</td>
                        <td class="sum"><code>{sum}</code></td>
                        <td>{sites.into_iter().map(|(site, h)| view! { <a class="download" href=h download="">{site}</a>" " }).collect_view()}</td>
                    </tr>
                }).collect_view()}
                </tbody>
            </table></div>
            {(!refs.is_empty()).then(|| view! {
                <h3>"Kerchunk references"</h3>
                {
                    // The dataset view (fedstac's `kerchunk` asset, or any single reference) gets the snippet;
                    // per-file references (`kerchunk_<file>`) are links.
                    let with_snippet = if refs.iter().any(|r| r.0 == "kerchunk") { Some("kerchunk".to_string()) } else { refs.first().map(|r| r.0.clone()) };
                    refs.into_iter().map(|(name, h, template)| {
                        let overrides = template
                            .map(|t| format!(",\n                                        \"template_overrides\": {{\"{t}\": \"{}\"}}", h.rsplit_once('/').map(|(d, _)| d).unwrap_or(".")))
                            .unwrap_or_default();
                        let snippet = format!("import xarray as xr\nds = xr.open_dataset(\n    \"reference://\", engine=\"zarr\",\n    backend_kwargs={{\"consolidated\": False,\n                    \"storage_options\": {{\"fo\": \"{h}\"{overrides},\n                                        \"remote_options\": {{\"asynchronous\": True}}}}}},\n)");
                        let show = with_snippet.as_deref() == Some(name.as_str());
                        view! { <p><a href=h.clone()>{name}</a></p>{show.then(|| view! { <pre class="snippet"><code>{snippet}</code></pre> })} }
                    }).collect_view()
                }
            })}
            <h3>"Properties"</h3>
            <div class="scroll"><table class="props">
                <tbody>
                {props.into_iter().map(|(k, v)| view! { <tr><th scope="row">{k}</th><td>{v}</td></tr> }).collect_view()}
                </tbody>
            </table></div>
        </article>
    }
}
