//! The partner writes a receiver has accepted, kept so that they outlive the
//! site's own publishes: an upload replaces the tree with the publisher's
//! build, and [`super::store::Site::apply_upload`] lays these back on top of
//! it in the same atomic apply.
//!
//! Kept per item, as the effect rather than the request, so that it composes
//! with whatever the publisher's next build holds:
//! - a partner's own dataset (created, replaced or retracted by it): the item as written;
//! - a partner's deletion of its own dataset;
//! - a partner's replicas on someone else's item: its node's alternate per
//!   asset key (or its removal), set on the publisher's item whatever else
//!   changed in it. A replica whose item is not in an uploaded tree stays
//!   pending (kept, reported) until a tree holds the item again.
//!
//! Stored as an append-only JSON-lines log in the state dir (`partner-writes.jsonl`),
//! synced before a transaction is answered; folded per item when loaded and
//! compacted (rewritten folded, temp + rename) when the receiver starts.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What one partner did to one item, as it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Effect {
    /// The partner's own dataset, as written (owner set).
    Own { item: Value },
    /// The partner deleted its own dataset.
    Deleted,
    /// The partner's alternates (under `node`) by asset key; `None`: removed.
    Replicas { node: String, assets: BTreeMap<String, Option<Value>> },
}

/// Writes and their log lines, made before they are kept (the JSON of a bulk
/// write's thousands of items takes a while: it is made during the apply).
pub struct Encoded {
    writes: Vec<Write>,
    buf: Vec<u8>,
}

impl Encoded {
    pub fn of(writes: Vec<Write>) -> Result<Encoded> {
        let mut buf = Vec::new();
        for w in &writes {
            serde_json::to_writer(&mut buf, w)?;
            buf.push(b'\n');
        }
        Ok(Encoded { writes, buf })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Write {
    pub id: String,
    pub client: String,
    #[serde(flatten)]
    pub effect: Effect,
}

impl Write {
    /// The effect of a partner turning `old` into `new` (`None`: deleted).
    /// `own`: the item is the partner's dataset (it created it or holds its data).
    pub fn of(id: &str, client: &str, node: &str, own: bool, old: Option<&Value>, new: Option<&Value>) -> Write {
        let effect = match (own, new) {
            (_, None) => Effect::Deleted,
            (true, Some(item)) => Effect::Own { item: item.clone() },
            (false, Some(item)) => {
                let mut assets: BTreeMap<String, Option<Value>> = BTreeMap::new();
                for (key, alt) in alternates(old, node) {
                    if alt.is_some() {
                        assets.insert(key, None);
                    }
                }
                for (key, alt) in alternates(Some(item), node) {
                    if alt.is_some() {
                        assets.insert(key, alt);
                    }
                }
                Effect::Replicas { node: node.to_string(), assets }
            }
        };
        Write { id: id.to_string(), client: client.to_string(), effect }
    }
}

fn alternates(item: Option<&Value>, node: &str) -> Vec<(String, Option<Value>)> {
    let Some(assets) = item.and_then(|i| i.get("assets")).and_then(Value::as_object) else { return Vec::new() };
    assets.iter().map(|(k, a)| (k.clone(), a.get("alternate").and_then(|alt| alt.get(node)).cloned())).collect()
}

/// Sets `node`'s alternates on `item`; the asset keys it lacks are returned (the replica stays kept).
pub fn set_replicas(item: &mut Value, node: &str, replicas: &BTreeMap<String, Option<Value>>) -> Vec<String> {
    let mut missing = Vec::new();
    let mut any = false;
    for (key, alt) in replicas {
        let Some(asset) = item.get_mut("assets").and_then(|a| a.get_mut(key)).and_then(Value::as_object_mut) else {
            if alt.is_some() {
                missing.push(key.clone());
            }
            continue;
        };
        match alt {
            Some(v) => {
                let alts = asset.entry("alternate").or_insert_with(|| Value::Object(Default::default()));
                if let Some(m) = alts.as_object_mut() {
                    m.insert(node.to_string(), v.clone());
                    any = true;
                }
            }
            None => {
                if let Some(m) = asset.get_mut("alternate").and_then(Value::as_object_mut) {
                    m.remove(node);
                    if m.is_empty() {
                        asset.remove("alternate");
                    }
                }
            }
        }
    }
    if any {
        if let Some(ext) = item.get_mut("stac_extensions").and_then(Value::as_array_mut) {
            if !ext.iter().any(|e| e.as_str() == Some(crate::merge::ALTERNATE_EXTENSION)) {
                ext.push(Value::String(crate::merge::ALTERNATE_EXTENSION.into()));
            }
        }
    }
    missing
}

/// The folded log: item id → client → effect (several partners may hold replicas on one item).
pub type Effects = BTreeMap<String, BTreeMap<String, Effect>>;

pub struct PartnerWrites {
    path: PathBuf,
    effects: Mutex<Effects>,
}

impl PartnerWrites {
    /// Loads and compacts the log. A torn last line (a crash mid-append, never answered) is dropped.
    pub fn open(state_dir: &Path) -> Result<PartnerWrites> {
        let path = state_dir.join("partner-writes.jsonl");
        let mut effects = Effects::new();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
                for (n, line) in lines.iter().enumerate() {
                    match serde_json::from_str::<Write>(line) {
                        Ok(w) => fold(&mut effects, w),
                        Err(e) if n + 1 == lines.len() => tracing::warn!("{}: dropping a torn last line: {e}", path.display()),
                        Err(e) => return Err(e).with_context(|| format!("{} line {}", path.display(), n + 1)),
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
        let log = PartnerWrites { path, effects: Mutex::new(effects) };
        log.compact()?;
        Ok(log)
    }

    fn compact(&self) -> Result<()> {
        let effects = self.effects.lock().unwrap();
        let mut buf = Vec::new();
        for (id, by_client) in effects.iter() {
            for (client, effect) in by_client {
                serde_json::to_writer(&mut buf, &Write { id: id.clone(), client: client.clone(), effect: effect.clone() })?;
                buf.push(b'\n');
            }
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("compacting {}", self.path.display()))?;
        tmp.write_all(&buf)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&self.path).with_context(|| format!("replacing {}", self.path.display()))?;
        std::fs::File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("syncing {}", dir.display()))?;
        Ok(())
    }

    /// Appends writes (synced) and folds them in.
    pub fn append(&self, writes: Vec<Write>) -> Result<()> {
        self.append_encoded(Encoded::of(writes)?)
    }

    /// [`Self::append`] for writes encoded ahead (on another thread, while the site is written).
    pub fn append_encoded(&self, encoded: Encoded) -> Result<()> {
        let Encoded { writes, buf } = encoded;
        if writes.is_empty() {
            return Ok(());
        }
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.path).with_context(|| format!("opening {}", self.path.display()))?;
        f.write_all(&buf).with_context(|| format!("writing {}", self.path.display()))?;
        f.sync_data().with_context(|| format!("syncing {}", self.path.display()))?;
        let mut effects = self.effects.lock().unwrap();
        for w in writes {
            fold(&mut effects, w);
        }
        Ok(())
    }

    pub fn snapshot(&self) -> Effects {
        self.effects.lock().unwrap().clone()
    }
}

fn fold(effects: &mut Effects, w: Write) {
    let by_client = effects.entry(w.id).or_default();
    match (by_client.get_mut(&w.client), w.effect) {
        // Replica changes accumulate per asset key.
        (Some(Effect::Replicas { assets, .. }), Effect::Replicas { assets: more, .. }) => assets.extend(more),
        (_, effect) => {
            by_client.insert(w.client, effect);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn log_folds_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartnerWrites::open(dir.path()).unwrap();
        let dkrz = json!({"id": "x", "stac_extensions": [], "assets": {"a.nc": {"href": "https://dkrz/a.nc"}, "b.nc": {"href": "https://dkrz/b.nc"}}});
        let mut replica = dkrz.clone();
        replica["assets"]["a.nc"]["alternate"] = json!({"ceda": {"href": "https://ceda/a.nc"}});
        let w1 = Write::of("x", "ceda", "ceda", false, Some(&dkrz), Some(&replica));
        let mut both = replica.clone();
        both["assets"]["b.nc"]["alternate"] = json!({"ceda": {"href": "https://ceda/b.nc"}});
        let w2 = Write::of("x", "ceda", "ceda", false, Some(&replica), Some(&both));
        log.append(vec![w1, w2, Write::of("y", "ceda", "ceda", true, None, Some(&json!({"id": "y"})))]).unwrap();
        // A torn last line is dropped.
        std::fs::OpenOptions::new().append(true).open(dir.path().join("partner-writes.jsonl")).unwrap().write_all(b"{\"id\": \"z\", \"cli").unwrap();
        let log = PartnerWrites::open(dir.path()).unwrap();
        let effects = log.snapshot();
        assert_eq!(effects.len(), 2);
        let Effect::Replicas { node, assets } = &effects["x"]["ceda"] else { panic!() };
        assert_eq!(assets.len(), 2);
        let mut new_tree = dkrz.clone();
        new_tree["properties"] = json!({"title": "changed by the publisher"});
        assert!(set_replicas(&mut new_tree, node, assets).is_empty());
        assert_eq!(new_tree["assets"]["b.nc"]["alternate"]["ceda"]["href"], "https://ceda/b.nc");
        assert_eq!(new_tree["properties"]["title"], "changed by the publisher");
        assert_eq!(new_tree["stac_extensions"][0], crate::merge::ALTERNATE_EXTENSION);
        assert_eq!(effects["y"]["ceda"], Effect::Own { item: json!({"id": "y"}) });
    }
}
