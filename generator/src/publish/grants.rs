//! What a partner's client may write (its [`Grant`]): its own datasets (items
//! whose every data href is at its hosts) and its replicas (alternates under
//! its node name) on anyone's items, nothing else. An admin grant may do anything.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::config::Grant;

/// Property naming the partner client that created an item here (set by the receiver only).
pub const OWNER: &str = "fedstac:owner";

/// Whether `grant` may turn `old` into `new` (`None`: absent / deleted).
pub fn check(grant: &Grant, old: Option<&Value>, new: Option<&Value>) -> Result<(), String> {
    if grant.admin {
        return Ok(());
    }
    let client = &grant.client;
    match (old, new) {
        (None, None) => Ok(()),
        (None, Some(new)) => {
            if grant.own_datasets && hrefs_own(grant, new) && foreign_alternates(grant, new).is_empty() {
                Ok(())
            } else {
                Err(format!("client {client} may only create items whose data is all at its own hosts ({})", grant.hosts.join(", ")))
            }
        }
        (Some(old), None) => {
            if grant.own_datasets && is_own(grant, old) {
                Ok(())
            } else {
                Err(format!("client {client} may not delete an item it does not hold"))
            }
        }
        (Some(old), Some(new)) => {
            if grant.own_datasets && is_own(grant, old) && (hrefs_own(grant, new) || is_retraction(new)) && foreign_alternates(grant, new).is_empty() {
                return Ok(());
            }
            if grant.replicas {
                let node = grant.node.as_deref().unwrap_or_default();
                if without_replicas(old, node) == without_replicas(new, node) {
                    let bad: Vec<String> = replica_hrefs(new, node).into_iter().filter(|h| !at_hosts(grant, h)).collect();
                    if bad.is_empty() {
                        return Ok(());
                    }
                    return Err(format!("replicas of {client} must be at its hosts: {}", bad.join(", ")));
                }
            }
            Err(format!("client {client} may only add or change its own replicas (alternates named {:?}) on items it does not hold", grant.node.as_deref().unwrap_or("")))
        }
    }
}

fn assets(item: &Value) -> impl Iterator<Item = &Map<String, Value>> {
    item.get("assets").and_then(Value::as_object).into_iter().flat_map(|a| a.values()).filter_map(Value::as_object)
}

fn host_of(href: &str) -> Option<String> {
    url::Url::parse(href).ok().and_then(|u| u.host_str().map(str::to_ascii_lowercase))
}

fn at_hosts(grant: &Grant, href: &str) -> bool {
    host_of(href).is_some_and(|h| grant.hosts.iter().any(|g| g.eq_ignore_ascii_case(&h)))
}

/// The grant's client created it here, or every primary href is at the grant's hosts (and there is at least one).
pub fn is_own(grant: &Grant, item: &Value) -> bool {
    if let Some(owner) = item.get("properties").and_then(|p| p.get(OWNER)).and_then(Value::as_str) {
        return owner == grant.client;
    }
    hrefs_own(grant, item)
}

/// Every primary href is at the grant's hosts (and there is at least one).
fn hrefs_own(grant: &Grant, item: &Value) -> bool {
    let hrefs: Vec<&str> = assets(item).filter_map(|a| a.get("href").and_then(Value::as_str)).collect();
    !hrefs.is_empty() && hrefs.iter().all(|h| at_hosts(grant, h))
}

/// ESGF's retraction: `retracted: true`, `latest: false`, no assets.
fn is_retraction(item: &Value) -> bool {
    let p = &item["properties"];
    p["retracted"] == Value::Bool(true) && p["latest"] != Value::Bool(true) && assets(item).next().is_none()
}

/// Names of alternates not under the grant's node.
fn foreign_alternates(grant: &Grant, item: &Value) -> BTreeSet<String> {
    let node = grant.node.as_deref().unwrap_or_default();
    assets(item).filter_map(|a| a.get("alternate").and_then(Value::as_object)).flat_map(|alts| alts.keys().cloned()).filter(|n| n != node).collect()
}

fn replica_hrefs(item: &Value, node: &str) -> Vec<String> {
    assets(item).filter_map(|a| a.get("alternate")?.get(node)?.get("href")?.as_str().map(str::to_string)).collect()
}

/// The item minus the node's alternates (and what follows from them).
fn without_replicas(item: &Value, node: &str) -> Value {
    let mut item = item.clone();
    if let Some(assets) = item.get_mut("assets").and_then(Value::as_object_mut) {
        for asset in assets.values_mut() {
            let Some(a) = asset.as_object_mut() else { continue };
            if let Some(alts) = a.get_mut("alternate").and_then(Value::as_object_mut) {
                alts.remove(node);
                if alts.is_empty() {
                    a.remove("alternate");
                }
            }
        }
    }
    if let Some(ext) = item.get_mut("stac_extensions").and_then(Value::as_array_mut) {
        ext.retain(|e| e.as_str() != Some(crate::merge::ALTERNATE_EXTENSION));
    }
    if let Some(p) = item.get_mut("properties").and_then(Value::as_object_mut) {
        p.remove(crate::merge::HELD_AT);
    }
    item
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ceda() -> Grant {
        Grant { client: "ceda".into(), node: Some("ceda".into()), hosts: vec!["data.ceda.ac.uk".into()], replicas: true, own_datasets: true, admin: false }
    }
    fn item(href: &str) -> Value {
        json!({"id": "x", "properties": {"latest": true}, "assets": {"a.nc": {"href": href}}})
    }

    #[test]
    fn partners_write_their_own_datasets_and_replicas_only() {
        let g = ceda();
        let dkrz = item("https://esgf3.dkrz.de/a.nc");
        let own = item("https://data.ceda.ac.uk/a.nc");
        assert!(check(&g, None, Some(&own)).is_ok());
        assert!(check(&g, None, Some(&dkrz)).is_err());
        assert!(check(&g, Some(&own), None).is_ok());
        assert!(check(&g, Some(&dkrz), None).is_err());
        let mut replica = dkrz.clone();
        replica["assets"]["a.nc"]["alternate"] = json!({"ceda": {"href": "https://data.ceda.ac.uk/a.nc", "alternate:name": "ceda"}});
        assert!(check(&g, Some(&dkrz), Some(&replica)).is_ok());
        let mut elsewhere = replica.clone();
        elsewhere["assets"]["a.nc"]["alternate"]["ceda"]["href"] = json!("https://evil.example/a.nc");
        assert!(check(&g, Some(&dkrz), Some(&elsewhere)).is_err());
        let mut rewrite = replica.clone();
        rewrite["properties"]["latest"] = json!(false);
        assert!(check(&g, Some(&dkrz), Some(&rewrite)).is_err());
        let retracted = json!({"id": "x", "properties": {"latest": false, "retracted": true}, "assets": {}});
        assert!(check(&g, Some(&own), Some(&retracted)).is_ok());
        assert!(check(&g, Some(&dkrz), Some(&retracted)).is_err());
    }
}
