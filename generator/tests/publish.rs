//! Publishing end to end, against a real, independent OAuth2 server (npm
//! `oidc-provider`, started here on loopback with client credentials and JWT
//! access tokens) and the real `fedstac receive` binary: CEDA writes into
//! DKRZ's receiver and DKRZ into CEDA's; `publish.sh` publishes a site to a
//! receiver behind nginx, which then serves it; and every refusal the issue
//! lists (tokens, grants, bundles, bodies, concurrency, kill -9 mid-apply).

mod common;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use fedstac::publish::bundle::{self, Envelope};
use fedstac::publish::client::ClientAuth;
use serde_json::{json, Value};
use sha2::Digest as _;

const CEDA_URL: &str = "https://data.ceda.ac.uk/badc/cmip6/data/";
const DKRZ_URL: &str = "https://esgf3.dkrz.de/thredds/fileServer/cmip6/";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_port(port: u16, child: &mut Child, what: &str, log: &Path) {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what} exited ({status}): {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{what} did not listen on {port}: {}", std::fs::read_to_string(log).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(25));
    }
}

// ------------------------------------------------------------------ the OAuth2 server

/// npm oidc-provider (tests/oauth/server.mjs) on a loopback port; stopped on drop.
struct Oidc {
    child: Child,
    port: u16,
    dir: PathBuf,
}

/// Clients: (id, secret, allowed scopes).
const CLIENTS: &[(&str, &str, &str)] = &[
    ("ceda", "ceda-secret", "stac:write stac:publish"),
    ("dkrz", "dkrz-secret", "stac:write"),
    ("dkrz-admin", "dkrz-admin-secret", "stac:write stac:publish"),
    ("stranger", "stranger-secret", "stac:write"),
    ("receiver", "receiver-secret", "stac:write"),
];

impl Oidc {
    fn start(dir: &Path, port: Option<u16>, rotate: bool) -> Oidc {
        let server = repo().join("tests/oauth/server.mjs");
        assert!(repo().join("tests/oauth/node_modules/oidc-provider").is_dir(), "tests/oauth/node_modules is missing: run scripts/setup.sh --test (npm ci in tests/oauth)");
        std::fs::create_dir_all(dir).unwrap();
        let port = port.unwrap_or_else(free_port);
        let clients: Vec<Value> = CLIENTS.iter().map(|(id, secret, scope)| json!({"client_id": id, "client_secret": secret, "scope": scope})).collect();
        let cfg = dir.join("oidc.json");
        std::fs::write(&cfg, serde_json::to_vec(&json!({"clients": clients, "keys": dir.join("keys.json"), "rotate": rotate})).unwrap()).unwrap();
        let log = dir.join("oidc.log");
        let mut child = Command::new("node").arg(&server).arg(port.to_string()).arg(&cfg).stdout(std::fs::File::create(&log).unwrap()).stderr(Stdio::null()).spawn().expect("node (npm) is needed: scripts/setup.sh --test");
        wait_port(port, &mut child, "oidc-provider", &log);
        Oidc { child, port, dir: dir.to_path_buf() }
    }

    fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A client config for `fedstac push/publish` (secret in a file).
    fn client(&self, id: &str, scope: &str, resource: &str) -> (PathBuf, ClientAuth) {
        let secret = CLIENTS.iter().find(|c| c.0 == id).unwrap().1;
        let secret_file = self.dir.join(format!("{id}.secret"));
        std::fs::write(&secret_file, secret).unwrap();
        let path = self.dir.join(format!("{id}-{}.yaml", resource.replace(':', "_")));
        std::fs::write(&path, format!("issuer: {}\nclient_id: {id}\nclient_secret_file: {}\nscope: \"{scope}\"\nresource: \"{resource}\"\n", self.issuer(), secret_file.display())).unwrap();
        (path.clone(), ClientAuth::load(&path).unwrap())
    }

    async fn token(&self, id: &str, scope: &str, resource: &str) -> String {
        let (_, auth) = self.client(id, scope, resource);
        auth.token(&fedstac::publish::client::http().unwrap()).await.unwrap()
    }
}

impl Drop for Oidc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------ the sites and receivers

struct World {
    dir: tempfile::TempDir,
    archive: PathBuf,
}

impl World {
    /// The sample archive and both sites built (CEDA's and DKRZ's hosts differ, so grants can tell them apart).
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("archive");
        let out = Command::new(env!("CARGO_BIN_EXE_fedstac")).args(["-q", "sample"]).arg(&archive).output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let w = World { dir, archive };
        w.build("ceda");
        w.build("dkrz");
        w
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn config(&self, site: &str) -> PathBuf {
        let (root, url) = match site {
            "ceda" => (self.archive.join("ceda/badc/cmip6/data"), CEDA_URL),
            _ => (self.archive.join("dkrz/pool/data/CMIP6/data"), DKRZ_URL),
        };
        let path = self.path(&format!("{site}.yaml"));
        let yaml = format!(
            "site: {{name: {site}, title: {site}}}\nroots:\n  - {{path: {}, recipe: cmip6, data_url: \"{url}\"}}\noutput: {}\ncache: {}\nchecksums: false\n",
            root.display(),
            self.site(site).display(),
            self.path(&format!("cache-{site}")).display()
        );
        std::fs::write(&path, yaml).unwrap();
        path
    }

    fn site(&self, site: &str) -> PathBuf {
        self.path(&format!("www-{site}/site"))
    }

    fn build(&self, site: &str) {
        let out = Command::new(env!("CARGO_BIN_EXE_fedstac")).args(["-q", "build", "-c"]).arg(self.config(site)).output().unwrap();
        assert!(out.status.success(), "build {site}: {}", text(&out.stderr));
    }
}

/// `fedstac receive` for one site; killed on drop.
struct Receiver {
    child: Child,
    port: u16,
    config: PathBuf,
    state: PathBuf,
    log: PathBuf,
}

impl Receiver {
    fn start(w: &World, site: &str, oidc: &Oidc, extra: &str) -> Receiver {
        let port = free_port();
        let state = w.path(&format!("state-{site}"));
        let (grants, audience) = match site {
            "dkrz" => ("  - {client: ceda, node: ceda, hosts: [data.ceda.ac.uk], replicas: true, own_datasets: true}\n  - {client: dkrz-admin, admin: true}\n", "urn:fedstac:dkrz"),
            _ => ("  - {client: dkrz, node: dkrz, hosts: [esgf3.dkrz.de], replicas: true, own_datasets: true}\n", "urn:fedstac:ceda"),
        };
        let config = w.path(&format!("receiver-{site}.yaml"));
        let yaml = format!(
            "listen: 127.0.0.1:{port}\nsite_dir: {}\nstate_dir: {}\nsite: {{name: {site}, title: {site}}}\nauth:\n  issuer: {}\n  audience: {audience}\n  leeway_seconds: 1\ngrants:\n{grants}{extra}",
            w.site(site).display(),
            state.display(),
            oidc.issuer()
        );
        std::fs::write(&config, yaml).unwrap();
        Receiver::run(config, state, port)
    }

    fn run(config: PathBuf, state: PathBuf, port: u16) -> Receiver {
        std::fs::create_dir_all(&state).unwrap();
        let log = state.join(format!("receiver-{}.log", Instant::now().elapsed().as_nanos() + port as u128));
        let mut child = Command::new(env!("CARGO_BIN_EXE_fedstac"))
            .args(["receive", "-c"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        wait_port(port, &mut child, "fedstac receive", &log);
        Receiver { child, port, config, state, log }
    }

    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut next = Receiver::run(self.config.clone(), self.state.clone(), self.port);
        // `next` leaves with the old (dead) child.
        std::mem::swap(&mut self.child, &mut next.child);
        std::mem::swap(&mut self.log, &mut next.log);
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.state.join("audit.jsonl")).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn send(req: reqwest::RequestBuilder) -> (u16, Value, reqwest::header::HeaderMap) {
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null), headers)
}

fn item_path(site: &Path, id: &str) -> Option<PathBuf> {
    site_items(site).get(id).map(|i| i.path.clone())
}

fn read_item(site: &Path, id: &str) -> Value {
    serde_json::from_slice(&std::fs::read(item_path(site, id).unwrap_or_else(|| panic!("{id} not in {}", site.display()))).unwrap()).unwrap()
}

/// Ids the site's search index answers for an empty query.
fn indexed_ids(site: &Path) -> BTreeSet<String> {
    let q = fedstac_index::query::Query::from_params(std::iter::empty::<(&str, &str)>());
    fedstac_index::query::search_dir_with(&site.join("index"), &q, true, None).unwrap().all.unwrap().into_iter().collect()
}

/// An item of `site` made into a new dataset (another member), keeping its hrefs.
fn variant(item: &Value, n: usize) -> Value {
    let mut v = item.clone();
    let id = v["id"].as_str().unwrap().to_string();
    let parts: Vec<&str> = id.split('.').collect();
    let member = format!("r{}i1p1f1", 100 + n);
    let new_id = [&parts[..5], &[member.as_str()], &parts[6..]].concat().join(".");
    v["id"] = json!(new_id);
    v["properties"]["cmip6:member_id"] = json!(member);
    v
}

fn pick_own(site: &Path, other: &Path) -> (String, Value) {
    let theirs = site_items(other);
    let (id, item) = site_items(site).into_iter().find(|(id, _)| !theirs.contains_key(id)).expect("a dataset only one site holds");
    (id, item.json)
}

// ------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partners_write_into_each_other() {
    let w = World::new();
    let oidc = Oidc::start(&w.path("oidc"), None, false);
    let dkrz = Receiver::start(&w, "dkrz", &oidc, "");
    let ceda = Receiver::start(&w, "ceda", &oidc, "");
    let (dkrz_site, ceda_site) = (w.site("dkrz"), w.site("ceda"));
    let ceda_token = oidc.token("ceda", "stac:write", "urn:fedstac:dkrz").await;

    // CEDA adds its replica to a DKRZ item, with `fedstac push` (ESGF's replica patch).
    let (dkrz_id, dkrz_item) = pick_own(&dkrz_site, &ceda_site);
    let key = dkrz_item["assets"].as_object().unwrap().keys().find(|k| k.ends_with(".nc")).unwrap().clone();
    let replica_href = format!("{CEDA_URL}replica/{key}");
    let patch_file = w.path("replica.json");
    std::fs::write(&patch_file, serde_json::to_vec(&json!([{"op": "add", "path": format!("/assets/{key}/alternate/ceda"), "value": {"href": replica_href, "alternate:name": "ceda"}}])).unwrap()).unwrap();
    let (auth_file, _) = oidc.client("ceda", "stac:write", "urn:fedstac:dkrz");
    let out = Command::new(env!("CARGO_BIN_EXE_fedstac")).args(["push", "--receiver", &dkrz.url("/"), "--auth"]).arg(&auth_file).args(["--patch", &dkrz_id]).arg(&patch_file).output().unwrap();
    assert!(out.status.success(), "push: {}{}", text(&out.stdout), text(&out.stderr));
    let now = read_item(&dkrz_site, &dkrz_id);
    assert_eq!(now["assets"][&key]["alternate"]["ceda"]["href"], replica_href);
    assert_eq!(now["assets"][&key]["href"], dkrz_item["assets"][&key]["href"], "the primary copy stays DKRZ's");

    // CEDA may not rewrite, retract or delete DKRZ's item.
    let mut rewritten = now.clone();
    rewritten["properties"]["title"] = json!("CEDA was here");
    let url = dkrz.url(&format!("/collections/CMIP6/items/{dkrz_id}"));
    let (s, body, _) = send(http().put(&url).bearer_auth(&ceda_token).json(&rewritten)).await;
    assert_eq!(s, 403, "{body}");
    let retract = json!({"properties": {"latest": false, "retracted": true}, "assets": {}});
    let (s, _, _) = send(http().patch(&url).bearer_auth(&ceda_token).header("content-type", "application/merge-patch+json").json(&retract)).await;
    assert_eq!(s, 403);
    let (s, _, _) = send(http().delete(&url).bearer_auth(&ceda_token)).await;
    assert_eq!(s, 403);
    let mut elsewhere = json!([{"op": "add", "path": format!("/assets/{key}/alternate/ceda/href"), "value": "https://evil.example/x.nc"}]);
    let (s, _, _) = send(http().patch(&url).bearer_auth(&ceda_token).header("content-type", "application/json-patch+json").json(&elsewhere)).await;
    assert_eq!(s, 403, "a replica must be at CEDA's hosts");
    elsewhere[0]["path"] = json!(format!("/assets/{key}/alternate/dkrz2"));
    elsewhere[0]["value"] = json!({"href": format!("{CEDA_URL}x.nc")});
    let (s, _, _) = send(http().patch(&url).bearer_auth(&ceda_token).header("content-type", "application/json-patch+json").json(&elsewhere)).await;
    assert_eq!(s, 403, "only alternates under CEDA's own node name");
    assert_eq!(read_item(&dkrz_site, &dkrz_id), now, "refused writes change nothing");

    // CEDA adds one of its own datasets: served, filed, and in the search index.
    let (ceda_id, ceda_item) = pick_own(&ceda_site, &dkrz_site);
    assert!(!indexed_ids(&dkrz_site).contains(&ceda_id));
    let (s, body, headers) = send(http().post(dkrz.url("/collections/CMIP6/items")).bearer_auth(&ceda_token).json(&ceda_item)).await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(headers["location"], format!("/collections/CMIP6/items/{ceda_id}"));
    let stored = read_item(&dkrz_site, &ceda_id);
    assert_eq!(stored["assets"], body["assets"]);
    assert!(stored["links"].as_array().unwrap().iter().any(|l| l["rel"] == "parent"), "filed in the catalogue tree");
    assert!(item_path(&dkrz_site, &ceda_id).unwrap().with_extension("html").is_file(), "its page");
    assert!(indexed_ids(&dkrz_site).contains(&ceda_id), "in the search index");
    let parent = item_path(&dkrz_site, &ceda_id).unwrap().parent().unwrap().join("catalog.json");
    let parent: Value = serde_json::from_slice(&std::fs::read(parent).unwrap()).unwrap();
    assert!(parent["links"].as_array().unwrap().iter().any(|l| l["href"] == format!("./{ceda_id}.json")), "linked from its catalogue");
    let (s, _, _) = send(http().post(dkrz.url("/collections/CMIP6/items")).bearer_auth(&ceda_token).json(&ceda_item)).await;
    assert_eq!(s, 409, "a second create of the same id");

    // CEDA retracts its own dataset (ESGF: latest=false, retracted=true, assets={}), then deletes it.
    let url = dkrz.url(&format!("/collections/CMIP6/items/{ceda_id}"));
    let (s, body, _) = send(http().patch(&url).bearer_auth(&ceda_token).header("content-type", "application/merge-patch+json").json(&retract)).await;
    assert_eq!(s, 200, "{body}");
    let stored = read_item(&dkrz_site, &ceda_id);
    assert_eq!((stored["properties"]["retracted"].clone(), stored["properties"]["latest"].clone(), stored["assets"].clone()), (json!(true), json!(false), json!({})));
    let (s, _, _) = send(http().delete(&url).bearer_auth(&ceda_token)).await;
    assert_eq!(s, 204);
    assert!(item_path(&dkrz_site, &ceda_id).is_none());
    assert!(!indexed_ids(&dkrz_site).contains(&ceda_id));

    // DKRZ writes into CEDA's receiver: its replica on a CEDA item.
    let dkrz_token = oidc.token("dkrz", "stac:write", "urn:fedstac:ceda").await;
    let ckey = ceda_item["assets"].as_object().unwrap().keys().find(|k| k.ends_with(".nc")).unwrap().clone();
    let patch = json!([{"op": "add", "path": format!("/assets/{ckey}/alternate/dkrz"), "value": {"href": format!("{DKRZ_URL}{ckey}"), "alternate:name": "dkrz"}}]);
    let (s, body, _) = send(http().patch(ceda.url(&format!("/collections/CMIP6/items/{ceda_id}"))).bearer_auth(&dkrz_token).header("content-type", "application/json-patch+json").json(&patch)).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(read_item(&ceda_site, &ceda_id)["assets"][&ckey]["alternate"]["dkrz"]["href"], format!("{DKRZ_URL}{ckey}"));
    // … but CEDA's token is not for CEDA's own receiver (audience), and DKRZ's is not for DKRZ's.
    let (s, _, _) = send(http().delete(ceda.url(&format!("/collections/CMIP6/items/{ceda_id}"))).bearer_auth(&ceda_token)).await;
    assert_eq!(s, 401);

    // Everything is in the audit log: who, what, when, outcome.
    let log = dkrz.audit();
    let seen: Vec<(String, String, u64)> = log.iter().map(|e| (e["client"].as_str().unwrap().into(), e["action"].as_str().unwrap().into(), e["status"].as_u64().unwrap())).collect();
    for want in [("patch", 200), ("replace", 403), ("patch", 403), ("delete", 403), ("create", 201), ("create", 409), ("delete", 204)] {
        assert!(seen.contains(&("ceda".into(), want.0.into(), want.1)), "audit lacks {want:?}: {seen:?}");
    }
    assert!(log.iter().all(|e| e["time"].as_str().is_some_and(|t| t.ends_with('Z')) && e["subject"] == "ceda"));
    assert!(log.iter().any(|e| e["target"] == dkrz_id.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked() {
    let w = World::new();
    let oidc_dir = w.path("oidc");
    let mut oidc = Oidc::start(&oidc_dir, None, false);
    let other = Oidc::start(&w.path("oidc-other"), None, false);
    let dkrz = Receiver::start(&w, "dkrz", &oidc, "");
    let before = snapshot(&w.site("dkrz"));
    // A request that passes authentication and then fails (404: no such item) tells auth apart.
    let url = dkrz.url("/collections/CMIP6/items/CMIP6.CMIP.X.Y.historical.r1i1p1f1.Amon.tas.gn.v20200101");
    let probe = |token: Option<String>| {
        let mut r = http().delete(&url);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        send(r)
    };

    let (s, _, h) = probe(None).await;
    assert_eq!(s, 401);
    assert!(h["www-authenticate"].to_str().unwrap().starts_with("Bearer"), "{h:?}");
    let (s, _, _) = send(http().delete(&url).header("authorization", "Basic Y2VkYTpjZWRhLXNlY3JldA==")).await;
    assert_eq!(s, 401);

    let good = oidc.token("ceda", "stac:write", "urn:fedstac:dkrz").await;
    let (s, body, _) = probe(Some(good.clone())).await;
    assert_eq!(s, 404, "a valid token passes: {body}");

    // Wrong audience, wrong issuer, garbage.
    let (s, _, h) = probe(Some(oidc.token("ceda", "stac:write", "urn:fedstac:ceda").await)).await;
    assert_eq!(s, 401);
    assert!(h["www-authenticate"].to_str().unwrap().contains("invalid_token"));
    let (s, _, _) = probe(Some(other.token("ceda", "stac:write", "urn:fedstac:dkrz").await)).await;
    assert_eq!(s, 401, "a token from another issuer");
    let (s, _, _) = probe(Some("not.a.token".into())).await;
    assert_eq!(s, 401);

    // Forged tokens: the good token's claims with `alg: none`, and with HS256 keyed by the issuer's public key.
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = good.split('.').collect();
    let header: Value = serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
    let none_header = b64.encode(serde_json::to_vec(&json!({"alg": "none", "typ": "at+jwt", "kid": header["kid"]})).unwrap());
    let (s, _, _) = probe(Some(format!("{none_header}.{}.", parts[1]))).await;
    assert_eq!(s, 401, "alg none");
    let jwks: Value = reqwest::get(format!("{}/jwks", oidc.issuer())).await.unwrap().json().await.unwrap();
    let jwk = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == header["kid"]).unwrap().clone();
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk).unwrap();
    let claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.kid = jwk.common.key_id.clone();
    for secret in [serde_json::to_vec(&jwk).unwrap(), jwks.to_string().into_bytes(), b64.decode(jwks["keys"][0]["n"].as_str().unwrap()).unwrap()] {
        let forged = jsonwebtoken::encode(&hs, &claims, &jsonwebtoken::EncodingKey::from_secret(&secret)).unwrap();
        let (s, _, _) = probe(Some(forged)).await;
        assert_eq!(s, 401, "HS256 keyed with the public key");
    }
    // A tampered payload under the real signature.
    let mut tampered_claims = claims.clone();
    tampered_claims["client_id"] = json!("dkrz-admin");
    let (s, _, _) = probe(Some(format!("{}.{}.{}", parts[0], b64.encode(serde_json::to_vec(&tampered_claims).unwrap()), parts[2]))).await;
    assert_eq!(s, 401, "tampered claims");

    // Expired (a 1-second token, past the 1-second leeway).
    let short = oidc.token("ceda", "stac:write", "urn:fedstac:dkrz:short").await;
    let (s, body, _) = probe(Some(short.clone())).await;
    assert_eq!(s, 404, "still valid: {body}");
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let (s, _, h) = probe(Some(short)).await;
    assert_eq!(s, 401, "expired");
    assert!(h["www-authenticate"].to_str().unwrap().contains("invalid_token"));

    // Valid tokens without the scope or the grant: 403.
    let (s, _, h) = probe(Some(oidc.token("ceda", "stac:publish", "urn:fedstac:dkrz").await)).await;
    assert_eq!(s, 403, "no write scope");
    assert!(h["www-authenticate"].to_str().unwrap().contains("insufficient_scope"));
    let (s, _, _) = probe(Some(oidc.token("stranger", "stac:write", "urn:fedstac:dkrz").await)).await;
    assert_eq!(s, 403, "a client without a grant");
    let (s, _, _) = probe(Some(oidc.token("dkrz", "stac:write", "urn:fedstac:dkrz").await)).await;
    assert_eq!(s, 403, "DKRZ's partner client has no grant at DKRZ's own receiver");
    let (s, _, _) = send(http().get(dkrz.url("/publish/manifest")).bearer_auth(&good)).await;
    assert_eq!(s, 403, "publishing needs its scope");

    // Key rotation: the issuer restarts with a new signing key; the receiver refetches its keys for the new kid.
    let port = oidc.port;
    drop(oidc);
    oidc = Oidc::start(&oidc_dir, Some(port), true);
    let rotated = oidc.token("ceda", "stac:write", "urn:fedstac:dkrz").await;
    let new_kid: Value = serde_json::from_slice(&b64.decode(rotated.split('.').next().unwrap()).unwrap()).unwrap();
    assert_ne!(new_kid["kid"], header["kid"], "the issuer signs with a new key");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (s, body, _) = probe(Some(rotated)).await;
    assert_eq!(s, 404, "a token signed with the rotated key: {body}");

    assert_same_tree(&before, &snapshot(&w.site("dkrz")), "no write happened");
    let log = std::fs::read_to_string(&dkrz.log).unwrap();
    assert!(log.contains("401"), "refusals are logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_checks_opaque_tokens() {
    let w = World::new();
    let oidc = Oidc::start(&w.path("oidc"), None, false);
    let secret = w.path("receiver.secret");
    std::fs::write(&secret, "receiver-secret").unwrap();
    // DKRZ's receiver, restarted with RFC 7662 introspection (the receiver's own client at the issuer).
    let mut dkrz = Receiver::start(&w, "dkrz", &oidc, "");
    let yaml = std::fs::read_to_string(&dkrz.config).unwrap().replace("  leeway_seconds: 1\n", &format!("  leeway_seconds: 1\n  introspection: {{client_id: receiver, client_secret_file: {}}}\n", secret.display()));
    std::fs::write(&dkrz.config, yaml).unwrap();
    dkrz.restart();
    let url = dkrz.url("/collections/CMIP6/items/CMIP6.CMIP.X.Y.historical.r1i1p1f1.Amon.tas.gn.v20200101");
    let opaque = oidc.token("ceda", "stac:write", "urn:fedstac:dkrz:opaque").await;
    assert_eq!(opaque.split('.').count(), 1, "an opaque token");
    let (s, body, _) = send(http().delete(&url).bearer_auth(&opaque)).await;
    assert_eq!(s, 404, "introspected as active: {body}");
    let wrong = oidc.token("ceda", "stac:write", "urn:fedstac:ceda:opaque").await;
    let (s, _, _) = send(http().delete(&url).bearer_auth(&wrong)).await;
    assert_eq!(s, 401, "introspection: wrong audience");
    let (s, _, _) = send(http().delete(&url).bearer_auth("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")).await;
    assert_eq!(s, 401, "introspection: unknown token");
    let jwt = oidc.token("ceda", "stac:write", "urn:fedstac:dkrz").await;
    let (s, _, _) = send(http().delete(&url).bearer_auth(&jwt)).await;
    assert_eq!(s, 404, "JWTs are still checked locally");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_writes_are_refused() {
    let w = World::new();
    let oidc = Oidc::start(&w.path("oidc"), None, false);
    let dkrz = Receiver::start(&w, "dkrz", &oidc, "max_body_bytes: 200000\n");
    let token = oidc.token("ceda", "stac:write", "urn:fedstac:dkrz").await;
    let before = snapshot(&w.site("dkrz"));
    let post = |body: Vec<u8>| send(http().post(dkrz.url("/collections/CMIP6/items")).bearer_auth(&token).header("content-type", "application/json").body(body));
    let (_, good) = pick_own(&w.site("ceda"), &w.site("dkrz"));

    let (s, _, _) = post(vec![b' '; 300_000]).await;
    assert_eq!(s, 413, "oversize body");
    let (s, body, _) = post(b"{\"type\": \"Feature\", ".to_vec()).await;
    assert_eq!(s, 400, "malformed JSON: {body}");
    let cases: Vec<(&str, Value)> = vec![
        ("not an item", json!({"type": "Catalog", "id": "x"})),
        ("no properties", { let mut v = good.clone(); v.as_object_mut().unwrap().remove("properties"); v }),
        ("bad time", { let mut v = good.clone(); v["properties"]["start_datetime"] = json!("yesterday"); v }),
        ("id traversal", { let mut v = good.clone(); v["id"] = json!("../../../etc/passwd"); v }),
        ("id not CMIP6", { let mut v = good.clone(); v["id"] = json!("hello"); v }),
        ("javascript href", { let mut v = good.clone(); let k = v["assets"].as_object().unwrap().keys().next().unwrap().clone(); v["assets"][&k]["href"] = json!("javascript:alert(1)"); v }),
        ("file href", { let mut v = good.clone(); let k = v["assets"].as_object().unwrap().keys().next().unwrap().clone(); v["assets"][&k]["href"] = json!("file:///etc/passwd"); v }),
        ("relative href", { let mut v = good.clone(); let k = v["assets"].as_object().unwrap().keys().next().unwrap().clone(); v["assets"][&k]["href"] = json!("../../x.nc"); v }),
        ("wrong collection", { let mut v = good.clone(); v["collection"] = json!("CORDEX"); v }),
    ];
    for (what, body) in cases {
        let (s, answer, _) = post(serde_json::to_vec(&body).unwrap()).await;
        assert_eq!(s, 400, "{what}: {answer}");
        assert!(answer["description"].is_string(), "{what}: a reason");
    }
    // A patch that breaks the item, and a patch of another content type.
    let (id, _) = pick_own(&w.site("dkrz"), &w.site("ceda"));
    let url = dkrz.url(&format!("/collections/CMIP6/items/{id}"));
    let (s, _, _) = send(http().patch(&url).bearer_auth(&token).header("content-type", "application/json-patch+json").json(&json!([{"op": "remove", "path": "/properties"}]))).await;
    assert!(s == 400 || s == 403, "{s}");
    let (s, _, _) = send(http().patch(&url).bearer_auth(&token).header("content-type", "text/plain").body("x")).await;
    assert_eq!(s, 415);
    let (s, _, _) = send(http().patch(&url).bearer_auth(&token).header("content-type", "application/json-patch+json").json(&json!([{"op": "test", "path": "/id", "value": "other"}]))).await;
    assert_eq!(s, 422, "a failing JSON Patch test op");
    assert_same_tree(&before, &snapshot(&w.site("dkrz")), "refused writes leave the site as it was");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_and_kill_during_apply() {
    let w = World::new();
    let oidc = Oidc::start(&w.path("oidc"), None, false);
    let mut dkrz = Receiver::start(&w, "dkrz", &oidc, "");
    let token = oidc.token("ceda", "stac:write", "urn:fedstac:dkrz").await;
    let (_, template) = pick_own(&w.site("ceda"), &w.site("dkrz"));
    let items_before = site_items(&w.site("dkrz")).len();

    // 8 writers at once, 10 items each: every write lands, none is lost.
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (url, token, template) = (dkrz.url("/collections/CMIP6/items"), token.clone(), template.clone());
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for i in 0..10 {
                let r = http().post(&url).bearer_auth(&token).json(&variant(&template, t * 10 + i)).send().await.unwrap();
                statuses.push(r.status().as_u16());
            }
            statuses
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap().iter().all(|s| *s == 201));
    }
    let items = site_items(&w.site("dkrz"));
    assert_eq!(items.len(), items_before + 80);
    assert_eq!(indexed_ids(&w.site("dkrz")).len(), items_before + 80);

    // kill -9 while a bulk write is being applied: the site is the old one or the new one, whole.
    let bulk: Vec<Value> = (100..2100).map(|n| variant(&template, n)).collect();
    let body = json!({"type": "FeatureCollection", "features": bulk});
    let url = dkrz.url("/collections/CMIP6/items");
    let t2 = token.clone();
    let request = tokio::spawn(async move { http().post(&url).bearer_auth(&t2).json(&body).send().await.map(|r| r.status().as_u16()) });
    let staging = w.path("www-dkrz/.site.staging");
    let started = Instant::now();
    while !staging.exists() && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(staging.exists(), "the apply started");
    tokio::time::sleep(Duration::from_millis(150)).await;
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(dkrz.child.id() as i32, libc::SIGKILL) };
    let _ = dkrz.child.wait();
    let answered = request.await.unwrap();
    assert_consistent(&w.site("dkrz"));
    let after = site_items(&w.site("dkrz")).len();
    match answered {
        // Killed mid-apply: the site before the bulk write, whole (or all of it, had the swap just happened).
        Err(_) => assert!(after == items_before + 80 || after == items_before + 2080, "{after} items: neither before nor after the bulk write"),
        // (A machine fast enough to finish first: then it is all there.)
        Ok(status) => assert_eq!((status, after), (201, items_before + 2080)),
    }

    // Restarted, the receiver clears the stale staging tree and goes on.
    dkrz.restart();
    let r = http().post(dkrz.url("/collections/CMIP6/items")).bearer_auth(&token).json(&variant(&template, 5000)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    assert!(!staging.exists());
    assert_consistent(&w.site("dkrz"));
}

/// Every file the manifest lists is there with its digest, and the catalogue parses.
fn assert_consistent(site: &Path) {
    let manifest: Value = serde_json::from_slice(&std::fs::read(site.join("fedstac-manifest.json")).unwrap()).unwrap();
    for (rel, e) in manifest["files"].as_object().unwrap() {
        let bytes = std::fs::read(site.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), e["sha256"].as_str().unwrap(), "{rel}");
    }
    let listed: BTreeSet<&String> = manifest["files"].as_object().unwrap().keys().collect();
    for rel in files_below(site) {
        assert!(listed.contains(&rel) || rel == "fedstac-manifest.json", "{rel} is not in the manifest");
    }
    let _: Value = serde_json::from_slice(&std::fs::read(site.join("catalog.json")).unwrap()).unwrap();
}

// ------------------------------------------------------------------ publishing

struct Nginx {
    child: Child,
    port: u16,
}

impl Nginx {
    /// Serves `root`; the write paths go to the receiver.
    fn start(prefix: &Path, root: &Path, receiver_port: u16) -> Nginx {
        std::fs::create_dir_all(prefix).unwrap();
        let port = free_port();
        let p = prefix.display();
        let conf = format!(
            "worker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/error.log warn;\n{user}events {{ worker_connections 256; }}\n\
             http {{\n  types {{ application/json json; text/html html; }}\n  default_type application/octet-stream;\n  access_log {p}/access.log;\n  \
             client_body_temp_path {p}/body; proxy_temp_path {p}/proxy; fastcgi_temp_path {p}/fastcgi; uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;\n  \
             server {{\n    listen 127.0.0.1:{port};\n    root {root};\n{proxy}  }}\n}}\n",
            user = if is_root() { "user root;\n" } else { "" },
            root = root.display(),
            proxy = proxy_snippet(receiver_port),
        );
        std::fs::write(prefix.join("nginx.conf"), conf).unwrap();
        let mut child = Command::new("/usr/sbin/nginx").args(["-p", &p.to_string(), "-c", &format!("{p}/nginx.conf"), "-e", &format!("{p}/error.log"), "-g", "daemon off;"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("nginx (scripts/setup.sh)");
        wait_port(port, &mut child, "nginx", &prefix.join("error.log"));
        Nginx { child, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }
}

/// The nginx snippet of the README: writes to the receiver, reads from the files.
fn proxy_snippet(receiver_port: u16) -> String {
    format!(
        "    location /publish {{ proxy_pass http://127.0.0.1:{receiver_port}; client_max_body_size 0; proxy_request_buffering off; proxy_read_timeout 3600s; }}\n\
         \x20   location /collections/ {{ limit_except GET HEAD {{ proxy_pass http://127.0.0.1:{receiver_port}; }} client_max_body_size 64m; }}\n"
    )
}

impl Drop for Nginx {
    fn drop(&mut self) {
        common::stop_gracefully(&mut self.child);
    }
}

/// Runs publish.sh with `--json`: success, and the report.
fn publish_sh(args: &[&str]) -> (bool, Value) {
    let out = Command::new(repo().join("publish.sh")).args(args).env("FEDSTAC_BIN", env!("CARGO_BIN_EXE_fedstac")).output().unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("publish.sh printed no report ({e}): {}{}", text(&out.stdout), text(&out.stderr)));
    (out.status.success(), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_sh_publishes_behind_nginx() {
    let w = World::new();
    let oidc = Oidc::start(&w.path("oidc"), None, false);
    // The published copy of DKRZ's site lives elsewhere (the web host), empty at first.
    let www = w.path("webhost/site");
    let key = w.path("publisher.key");
    let out = Command::new(env!("CARGO_BIN_EXE_fedstac")).arg("keygen").arg(&key).output().unwrap();
    assert!(out.status.success());
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let port = free_port();
    let state = w.path("webhost-state");
    let config = w.path("receiver-webhost.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nsite_dir: {}\nstate_dir: {}\nsite: {{name: dkrz, title: dkrz}}\nauth: {{issuer: {}, audience: \"urn:fedstac:dkrz\"}}\n\
             grants:\n  - {{client: dkrz-admin, admin: true}}\n  - {{client: ceda, node: ceda, hosts: [data.ceda.ac.uk], replicas: true, own_datasets: true}}\n\
             publishers:\n  - {{key_id: dkrz-1, public_key_file: {}.pub, client: dkrz-admin}}\n",
            www.display(),
            state.display(),
            oidc.issuer(),
            key.display()
        ),
    )
    .unwrap();
    let receiver = Receiver::run(config, state.clone(), port);
    let nginx = Nginx::start(&w.path("nginx"), &www, port);
    let (auth, _) = oidc.client("dkrz-admin", "stac:write stac:publish", "urn:fedstac:dkrz");
    let site_cfg = w.config("dkrz");
    let args = ["-q", "--config", site_cfg.to_str().unwrap(), "--receiver", &nginx.url(""), "--auth", auth.to_str().unwrap(), "--key", key.to_str().unwrap(), "--key-id", "dkrz-1", "--json"];
    let args: Vec<&str> = args.into_iter().filter(|a| *a != "-q").collect();

    // First publish: everything travels.
    let (ok, report) = publish_sh(&args);
    assert!(ok, "{report}");
    assert_eq!(report["status"], 200, "{report}");
    let built = w.site("dkrz");
    let items = site_items(&built);
    assert_eq!(report["uploaded"], report["files"]);
    let (id, item) = items.iter().next().unwrap();
    let rel = item.path.strip_prefix(&built).unwrap().to_string_lossy().into_owned();
    let served: Value = reqwest::get(nginx.url(&rel)).await.unwrap().json().await.unwrap();
    assert_eq!(served["id"], id.as_str());
    let cat = reqwest::get(nginx.url("catalog.json")).await.unwrap();
    assert_eq!(cat.status(), 200);
    assert_eq!(indexed_ids(&www), items.keys().cloned().collect::<BTreeSet<_>>(), "the published search index finds every item");
    let index = reqwest::get(nginx.url("index/index.json")).await.unwrap();
    assert_eq!(index.status(), 200);

    // Nothing changed: nothing travels.
    let (ok, report) = publish_sh(&args);
    assert!(ok, "{report}");
    assert_eq!((report["status"].clone(), report["uploaded"].clone(), report["removed"].clone()), (json!(200), json!(0), json!(0)), "{report}");

    // A dataset gone from the archive: only the delta travels, and the item is gone from the web host.
    let victim = item.json["assets"].as_object().unwrap().values().find_map(|a| a["href"].as_str().filter(|h| h.ends_with(".nc"))).unwrap();
    let victim_rel = victim.strip_prefix(DKRZ_URL).unwrap();
    let victim_dir = w.archive.join("dkrz/pool/data/CMIP6/data").join(victim_rel).parent().unwrap().to_path_buf();
    std::fs::remove_dir_all(&victim_dir).unwrap();
    let (ok, report) = publish_sh(&args);
    assert!(ok, "{report}");
    assert_eq!(report["status"], 200, "{report}");
    assert!(report["removed"].as_u64().unwrap() >= 2, "{report}");
    assert!(report["uploaded"].as_u64().unwrap() < report["files"].as_u64().unwrap(), "only the delta travels: {report}");
    let unchanged_items_sent = report["changed"].as_array().unwrap().iter().filter_map(Value::as_str).filter(|p| p.contains("/CMIP6.")).count();
    assert_eq!(unchanged_items_sent, 0, "no unchanged item travels: {report}");
    assert_eq!(reqwest::get(nginx.url(&rel)).await.unwrap().status(), 404);
    assert!(!indexed_ids(&www).contains(id));

    // Partner writes go through the same nginx to the receiver.
    let ceda_token = oidc.token("ceda", "stac:write", "urn:fedstac:dkrz").await;
    let (_, own) = pick_own(&w.site("ceda"), &built);
    let (s, body, _) = send(http().post(nginx.url("collections/CMIP6/items")).bearer_auth(&ceda_token).json(&own)).await;
    assert_eq!(s, 201, "{body}");
    assert!(indexed_ids(&www).contains(own["id"].as_str().unwrap()));

    // Hostile uploads, each properly signed unless said otherwise.
    let admin = oidc.token("dkrz-admin", "stac:write stac:publish", "urn:fedstac:dkrz").await;
    let signing = bundle::read_signing_key(&key).unwrap();
    let upload = |bytes: Vec<u8>| send(http().post(nginx.url("publish")).bearer_auth(&admin).body(bytes));
    let base = || hex::encode(sha2::Sha256::digest(std::fs::read(www.join("fedstac-manifest.json")).unwrap()));
    let live_files = || -> std::collections::BTreeMap<String, fedstac::output::ManifestEntry> {
        let m: Value = serde_json::from_slice(&std::fs::read(www.join("fedstac-manifest.json")).unwrap()).unwrap();
        let mut files: std::collections::BTreeMap<String, fedstac::output::ManifestEntry> = serde_json::from_value(m["files"].clone()).unwrap();
        files.remove("fedstac-manifest.json");
        files.remove("fedstac-bundle.gz");
        files
    };
    let mut seq = 0u64;
    let mut envelope = |extra: &[(&str, &[u8])]| -> Envelope {
        seq += 1;
        let mut files = live_files();
        for (rel, bytes) in extra {
            files.insert(rel.to_string(), fedstac::output::ManifestEntry { sha256: hex::encode(sha2::Sha256::digest(bytes)), size: bytes.len() as u64, stac: false });
        }
        Envelope {
            format: bundle::FORMAT.into(),
            key_id: "dkrz-1".into(),
            site: "dkrz".into(),
            sequence: chrono::Utc::now().timestamp_millis() as u64 + seq,
            nonce: format!("{:032x}", rand_u128()),
            timestamp: chrono::Utc::now().timestamp(),
            base_manifest: base(),
            upload: extra.iter().map(|(r, _)| r.to_string()).collect(),
            files,
        }
    };
    // Builds the tar by hand so that entries can lie.
    let pack = |env: &Envelope, sig: Option<[u8; 64]>, entries: &[(&str, &[u8], tar::EntryType)]| -> Vec<u8> {
        use ed25519_dalek::Signer;
        let env_bytes = serde_json::to_vec(env).unwrap();
        let sig = sig.unwrap_or_else(|| signing.sign(&env_bytes).to_bytes());
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        bundle::append(&mut tar, "fedstac-publish.json", &env_bytes).unwrap();
        bundle::append(&mut tar, "fedstac-publish.sig", &sig).unwrap();
        for (name, bytes, kind) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            if *kind == tar::EntryType::Symlink {
                h.set_size(0);
                tar.append_link(&mut h, name, "/etc/passwd").unwrap();
            } else {
                h.set_size(bytes.len() as u64);
                // append_data refuses `..`; write the raw name to test the receiver, not the tar crate.
                h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
                h.set_cksum();
                tar.append(&h, *bytes).unwrap();
            }
        }
        tar.into_inner().unwrap().finish().unwrap()
    };
    let hello: &[u8] = b"hello";

    // A valid upload adding one file: accepted; the same bytes again: a replay.
    let env = envelope(&[("notes/hello.txt", hello)]);
    let good = pack(&env, None, &[("site/notes/hello.txt", hello, tar::EntryType::Regular)]);
    let (s, body, _) = upload(good.clone()).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(reqwest::get(nginx.url("notes/hello.txt")).await.unwrap().text().await.unwrap(), "hello");
    let (s, body, _) = upload(good).await;
    assert_eq!(s, 409, "replayed: {body}");
    let before = snapshot(&www);

    // Tampered signature; a tampered envelope under a good signature; a stale timestamp.
    let env = envelope(&[("notes/evil.txt", hello)]);
    let mut bad_sig = { use ed25519_dalek::Signer; signing.sign(&serde_json::to_vec(&env).unwrap()).to_bytes() };
    bad_sig[10] ^= 1;
    let (s, body, _) = upload(pack(&env, Some(bad_sig), &[("site/notes/evil.txt", hello, tar::EntryType::Regular)])).await;
    assert_eq!(s, 403, "{body}");
    let (s, _, _) = upload(pack(&env, None, &[("site/notes/evil.txt", b"HELLO", tar::EntryType::Regular)])).await;
    assert_eq!(s, 400, "bytes that differ from the signed digest");
    let mut old = envelope(&[]);
    old.timestamp -= 3600;
    let (s, _, _) = upload(pack(&old, None, &[])).await;
    assert_eq!(s, 409, "a stale upload");
    let other_key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    {
        use ed25519_dalek::Signer;
        let env = envelope(&[]);
        let sig = other_key.sign(&serde_json::to_vec(&env).unwrap()).to_bytes();
        let (s, _, _) = upload(pack(&env, Some(sig), &[])).await;
        assert_eq!(s, 403, "signed by a key the receiver does not know as dkrz-1");
    }

    // Path traversal: in the envelope, and in tar entries.
    for bad in ["../evil.txt", "/tmp/evil.txt", "notes/../../evil.txt", ".hidden/x"] {
        let env = envelope(&[(bad, hello)]);
        let (s, body, _) = upload(pack(&env, None, &[(&format!("site/{bad}"), hello, tar::EntryType::Regular)])).await;
        assert_eq!(s, 400, "{bad}: {body}");
    }
    let env = envelope(&[("notes/ok.txt", hello)]);
    for (name, kind) in [("../evil.txt", tar::EntryType::Regular), ("/tmp/evil.txt", tar::EntryType::Regular), ("site/../evil.txt", tar::EntryType::Regular), ("site/notes/ok.txt", tar::EntryType::Symlink), ("site/notes/ok.txt", tar::EntryType::Link)] {
        let env = { let mut e = env.clone(); e.nonce = format!("{:032x}", rand_u128()); e.sequence += 1000 + rand_u128() as u64 % 1000; e };
        let (s, body, _) = upload(pack(&env, None, &[(name, hello, kind)])).await;
        assert_eq!(s, 400, "{name} {kind:?}: {body}");
    }
    assert!(!w.path("webhost/evil.txt").exists() && !w.path("evil.txt").exists() && !Path::new("/tmp/evil.txt").exists());
    // A token without the publish scope, and another publisher's client.
    let write_only = oidc.token("dkrz-admin", "stac:write", "urn:fedstac:dkrz").await;
    let (s, _, _) = send(http().post(nginx.url("publish")).bearer_auth(&write_only).body(vec![0u8; 10])).await;
    assert_eq!(s, 403);
    let ceda_publish = oidc.token("ceda", "stac:publish", "urn:fedstac:dkrz").await;
    let env = envelope(&[]);
    let (s, _, _) = send(http().post(nginx.url("publish")).bearer_auth(&ceda_publish).body(pack(&env, None, &[]))).await;
    assert_eq!(s, 403, "the key belongs to DKRZ's publisher client");
    assert_same_tree(&before, &snapshot(&www), "refused uploads change nothing");
    let log = receiver.audit();
    assert!(log.iter().any(|e| e["action"] == "publish" && e["status"] == 200 && e["client"] == "dkrz-admin"));
    assert!(log.iter().any(|e| e["action"] == "publish" && e["status"] == 409));
}

fn rand_u128() -> u128 {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).unwrap();
    u128::from_le_bytes(b)
}

/// A partner's writes outlive the site's own publishes: laid again on every uploaded tree, and kept across restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partner_writes_survive_publishes() {
    let w = World::new();
    let oidc = Oidc::start(&w.path("oidc"), None, false);
    let www = w.path("webhost/site");
    let key = w.path("publisher.key");
    assert!(Command::new(env!("CARGO_BIN_EXE_fedstac")).arg("keygen").arg(&key).output().unwrap().status.success());
    let port = free_port();
    let state = w.path("webhost-state");
    let config = w.path("receiver-webhost.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nsite_dir: {}\nstate_dir: {}\nsite: {{name: dkrz, title: dkrz}}\nauth: {{issuer: {}, audience: \"urn:fedstac:dkrz\"}}\n\
             grants:\n  - {{client: dkrz-admin, admin: true}}\n  - {{client: ceda, node: ceda, hosts: [data.ceda.ac.uk], replicas: true, own_datasets: true}}\n\
             publishers:\n  - {{key_id: dkrz-1, public_key_file: {}.pub, client: dkrz-admin}}\n",
            www.display(),
            state.display(),
            oidc.issuer(),
            key.display()
        ),
    )
    .unwrap();
    let mut receiver = Receiver::run(config, state.clone(), port);
    let (auth, _) = oidc.client("dkrz-admin", "stac:write stac:publish", "urn:fedstac:dkrz");
    let site_cfg = w.config("dkrz");
    let receiver_url = receiver.url("/");
    let args = ["--config", site_cfg.to_str().unwrap(), "--receiver", &receiver_url, "--auth", auth.to_str().unwrap(), "--key", key.to_str().unwrap(), "--key-id", "dkrz-1", "--json"];
    let (ok, report) = publish_sh(&args);
    assert!(ok && report["status"] == 200, "{report}");
    let built = w.site("dkrz");
    let ceda_site = w.site("ceda");

    // CEDA: a replica on a DKRZ item, one on the item DKRZ will drop, its own dataset, and another it retracts.
    let ceda_token = oidc.token("ceda", "stac:write", "urn:fedstac:dkrz").await;
    let dkrz_items = site_items(&built);
    let ceda_only: Vec<(String, Value)> = site_items(&ceda_site).into_iter().filter(|(id, _)| !dkrz_items.contains_key(id)).map(|(id, i)| (id, i.json)).take(2).collect();
    assert_eq!(ceda_only.len(), 2, "two datasets only CEDA holds");
    let mut dkrz_only = dkrz_items.iter().filter(|(id, _)| !ceda_only.iter().any(|(c, _)| c == *id));
    let (kept_id, kept) = dkrz_only.next().unwrap();
    let (victim_id, victim) = dkrz_only.find(|(_, i)| i.json["properties"]["cmip6:source_id"] != kept.json["properties"]["cmip6:source_id"] || i.json["properties"]["cmip6:experiment_id"] != kept.json["properties"]["cmip6:experiment_id"]).unwrap();
    let replica = |item: &Value| -> (String, Value) {
        let key = item["assets"].as_object().unwrap().keys().find(|k| k.ends_with(".nc")).unwrap().clone();
        let href = format!("{CEDA_URL}replica/{key}");
        (href.clone(), json!([{"op": "add", "path": format!("/assets/{key}/alternate/ceda"), "value": {"href": href, "alternate:name": "ceda"}}]))
    };
    let (kept_href, patch) = replica(&kept.json);
    let item_url = |id: &str| receiver.url(&format!("/collections/CMIP6/items/{id}"));
    let (s, body, _) = send(http().patch(item_url(kept_id)).bearer_auth(&ceda_token).header("content-type", "application/json-patch+json").json(&patch)).await;
    assert_eq!(s, 200, "{body}");
    let (_, patch) = replica(&victim.json);
    let (s, body, _) = send(http().patch(item_url(victim_id)).bearer_auth(&ceda_token).header("content-type", "application/json-patch+json").json(&patch)).await;
    assert_eq!(s, 200, "{body}");
    let ((own_id, own), (gone_id, gone)) = (&ceda_only[0], &ceda_only[1]);
    for item in [own, gone] {
        let (s, body, _) = send(http().post(receiver.url("/collections/CMIP6/items")).bearer_auth(&ceda_token).json(item)).await;
        assert_eq!(s, 201, "{body}");
    }
    let retract = json!({"properties": {"latest": false, "retracted": true}, "assets": {}});
    let (s, body, _) = send(http().patch(item_url(gone_id)).bearer_auth(&ceda_token).header("content-type", "application/merge-patch+json").json(&retract)).await;
    assert_eq!(s, 200, "{body}");

    let check = |why: &str| {
        let kept_now = read_item(&www, kept_id);
        let key = kept_href.rsplit('/').next().unwrap();
        assert_eq!(kept_now["assets"][key]["alternate"]["ceda"]["href"], kept_href.as_str(), "{why}: CEDA's replica");
        assert_eq!(read_item(&www, own_id)["assets"], own["assets"], "{why}: CEDA's dataset");
        assert_eq!(read_item(&www, gone_id)["properties"]["retracted"], true, "{why}: CEDA's retraction");
        let indexed = indexed_ids(&www);
        assert!(indexed.contains(own_id) && indexed.contains(kept_id), "{why}: in the search index");
        assert_consistent(&www);
        kept_now
    };
    check("before");

    // DKRZ changes its tree (a dataset gone, the one CEDA replicated elsewhere) and publishes.
    let href = victim.json["assets"].as_object().unwrap().values().find_map(|a| a["href"].as_str().filter(|h| h.ends_with(".nc"))).unwrap();
    let victim_dir = w.archive.join("dkrz/pool/data/CMIP6/data").join(href.strip_prefix(DKRZ_URL).unwrap()).parent().unwrap().to_path_buf();
    let aside = w.path("victim-aside");
    std::fs::rename(&victim_dir, &aside).unwrap();
    let (ok, report) = publish_sh(&args);
    assert!(ok && report["status"] == 200, "{report}");
    assert!(report["removed"].as_u64().unwrap() >= 2, "the change travelled: {report}");
    assert!(item_path(&www, victim_id).is_none(), "DKRZ's change applied");
    let pending = report["answer"]["pending"].as_array().unwrap();
    assert!(pending.iter().any(|p| p.as_str().unwrap().starts_with(victim_id.as_str())), "the orphaned replica is pending: {report}");
    let after = check("after DKRZ's publish");
    assert_eq!(after["properties"], serde_json::from_slice::<Value>(&std::fs::read(item_path(&built, kept_id).unwrap()).unwrap()).unwrap()["properties"], "the rest of the item is DKRZ's");
    assert!(receiver.audit().iter().any(|e| e["action"] == "publish" && e["status"] == 200 && e["detail"].as_str().is_some_and(|d| d.contains(victim_id.as_str()))), "the audit log names the pending replica");

    // A restarted receiver keeps them for the next publish (here with the dataset back: the replica lands again).
    receiver.restart();
    std::fs::rename(&aside, &victim_dir).unwrap();
    let (ok, report) = publish_sh(&args);
    assert!(ok && report["status"] == 200, "{report}");
    check("after a restart and another publish");
    assert_eq!(report["answer"]["pending"], json!([]), "{report}");
    let (victim_href, _) = replica(&victim.json);
    let key = victim_href.rsplit('/').next().unwrap();
    assert_eq!(read_item(&www, victim_id)["assets"][key]["alternate"]["ceda"]["href"], victim_href.as_str(), "the pending replica lands when its item is back");
}
