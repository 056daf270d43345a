//! Stage 5: lay the items out as a static, self-contained STAC 1.1 tree with
//! relative links (it works under any URL prefix and when moved):
//!
//! ```text
//! catalog.json                      root catalogue (the site)
//! <collection>/collection.json      one per recipe collection (CMIP6, CORDEX)
//! <collection>/<level>/…/catalog.json   sub-catalogues from the recipe's hierarchy
//! <collection>/<level>/…/<id>.json  items
//! ```
//! Every JSON document has an HTML page beside it (`.html`), linked both ways.

use std::collections::BTreeMap;

use anyhow::Result;
use serde_json::{json, Map, Value};
use stac::{Bbox, Catalog, Collection, Extent, Item, Link, SpatialExtent, TemporalExtent};

use crate::config::SiteInfo;
use crate::html::{HtmlPages, PageKind};
use crate::items::DatasetItem;
use crate::output::SiteWriter;
use crate::recipe::CollectionSpec;

/// Items of one collection with the recipe's description of it.
pub struct CollectionInput<'a> {
    pub spec: &'a CollectionSpec,
    pub extensions: &'a [String],
    pub items: Vec<DatasetItem>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct CatalogueStats {
    pub collections: usize,
    pub catalogs: usize,
    pub items: usize,
}

/// A sub-catalogue under construction: children by name, items by id.
#[derive(Default)]
struct Node {
    children: BTreeMap<String, Node>,
    items: Vec<Item>,
}

impl Node {
    fn count(&self) -> usize {
        self.items.len() + self.children.values().map(Node::count).sum::<usize>()
    }
}

pub fn write_catalogue(writer: &mut SiteWriter, pages: &HtmlPages, site: &SiteInfo, collections: Vec<CollectionInput>) -> Result<CatalogueStats> {
    let mut stats = CatalogueStats::default();
    let mut root = Catalog::new(&site.name, if site.description.is_empty() { &site.title } else { &site.description });
    root.title = Some(site.title.clone());
    root.links.push(Link::root("./catalog.json").json());
    root.links.push(html_link("./catalog.html"));
    let mut root_children = Vec::new();

    for mut input in collections {
        let id = input.spec.id.clone();
        let mut tree = Node::default();
        for DatasetItem { item, hierarchy } in std::mem::take(&mut input.items) {
            let mut node = &mut tree;
            for level in hierarchy {
                node = node.children.entry(level).or_default();
            }
            node.items.push(item);
        }
        let count = tree.count();
        let (collection, facets) = make_collection(&input, &tree);
        root.links.push(Link::child(format!("./{id}/collection.json")).json().title(collection.title.clone()));
        root_children.push(json!({"title": collection.title, "href": format!("./{id}/collection.html"), "count": count}));
        write_node(writer, pages, &mut stats, &id, &[], tree, Some((collection, facets)))?;
        stats.collections += 1;
    }

    let page = json!({"kind": "catalog", "stac": root, "children": root_children, "breadcrumbs": [], "json_href": "./catalog.json"});
    writer.put("catalog.json", &to_json(&root)?)?;
    writer.put("catalog.html", pages.render(PageKind::Catalog, &page)?.as_bytes())?;
    stats.catalogs += 1;
    Ok(stats)
}

/// Writes a collection (`levels` empty) or sub-catalogue, its items, and recurses.
fn write_node(writer: &mut SiteWriter, pages: &HtmlPages, stats: &mut CatalogueStats, collection_id: &str, levels: &[String], node: Node, collection: Option<(Collection, Value)>) -> Result<()> {
    let depth = levels.len() + 1; // directories below the site root
    let up = "../".repeat(depth);
    let dir = std::iter::once(collection_id.to_string()).chain(levels.iter().cloned()).collect::<Vec<_>>().join("/");
    let to_collection = format!("{}collection.json", "../".repeat(levels.len()));
    let mut breadcrumbs = vec![json!({"title": "Catalogue", "href": format!("{up}catalog.html")})];
    for i in 0..levels.len() {
        let back = "../".repeat(levels.len() - i);
        let (title, page) = if i == 0 { (collection_id.to_string(), "collection.html") } else { (levels[i - 1].clone(), "catalog.html") };
        breadcrumbs.push(json!({"title": title, "href": format!("{back}{page}")}));
    }

    let mut links = vec![Link::root(format!("{up}catalog.json")).json()];
    let parent = if levels.len() == 1 { "../collection.json" } else { "../catalog.json" };
    links.push(Link::parent(parent).json());
    let mut children = Vec::new();
    for (name, child) in &node.children {
        let file = "catalog.json";
        links.push(Link::child(format!("./{name}/{file}")).json().title(name.clone()));
        children.push(json!({"title": name, "href": format!("./{name}/catalog.html"), "count": child.count()}));
    }
    let mut item_rows = Vec::new();
    let mut items = node.items;
    items.sort_by(|a, b| a.id.cmp(&b.id));
    for item in &items {
        links.push(Link::item(format!("./{}.json", item.id)).geojson().title(item.properties.title.clone()));
        item_rows.push(item_summary(item));
    }

    let mut facets = Value::Null;
    let (json_name, html_name, kind, stac_value) = match collection {
        Some((mut c, f)) => {
            facets = f;
            links.retain(|l| l.rel != "parent");
            links.insert(1, Link::parent("../catalog.json").json());
            c.links = links;
            c.links.push(html_link("./collection.html"));
            ("collection.json", "collection.html", PageKind::Collection, serde_json::to_value(&c)?)
        }
        None => {
            let mut cat = Catalog::new(levels.last().expect("sub-catalogue has a level"), format!("{} {}", collection_id, levels.join(" / ")));
            cat.title = levels.last().cloned();
            cat.links = links;
            cat.links.push(html_link("./catalog.html"));
            stats.catalogs += 1;
            ("catalog.json", "catalog.html", PageKind::Catalog, serde_json::to_value(&cat)?)
        }
    };
    writer.put(&format!("{dir}/{json_name}"), &to_json(&stac_value)?)?;
    let page = json!({
        "kind": if matches!(kind, PageKind::Collection) { "collection" } else { "catalog" },
        "stac": stac_value, "children": children, "items": item_rows, "facets": facets,
        "breadcrumbs": breadcrumbs, "json_href": format!("./{json_name}"),
    });
    writer.put(&format!("{dir}/{html_name}"), pages.render(kind, &page)?.as_bytes())?;

    for mut item in items {
        let parent_page = if levels.is_empty() { "collection.html" } else { "catalog.html" };
        item.links.splice(
            0..0,
            [
                Link::root(format!("{up}catalog.json")).json(),
                Link::parent(format!("./{json_name}")).json(),
                Link::collection(to_collection.clone()).json(),
                html_link(format!("./{}.html", item.id)),
            ],
        );
        let mut crumbs = breadcrumbs.clone();
        crumbs.push(json!({"title": levels.last().cloned().unwrap_or_else(|| collection_id.to_string()), "href": format!("./{parent_page}")}));
        let page = json!({"kind": "item", "stac": item, "breadcrumbs": crumbs, "json_href": format!("./{}.json", item.id)});
        writer.put(&format!("{dir}/{}.json", item.id), &to_json(&item)?)?;
        writer.put(&format!("{dir}/{}.html", item.id), pages.render(PageKind::Item, &page)?.as_bytes())?;
        stats.items += 1;
    }
    for (name, child) in node.children {
        let mut next = levels.to_vec();
        next.push(name);
        write_node(writer, pages, stats, collection_id, &next, child, None)?;
    }
    Ok(())
}

fn make_collection(input: &CollectionInput, tree: &Node) -> (Collection, Value) {
    let mut c = Collection::new(&input.spec.id, &input.spec.description);
    c.title = Some(input.spec.title.clone());
    c.license = input.spec.license.clone();
    c.extensions = input.extensions.to_vec();
    if !input.spec.keywords.is_empty() {
        c.keywords = Some(input.spec.keywords.clone());
    }
    let mut all = Vec::new();
    collect_items(tree, &mut all);
    let mut bbox: Option<[f64; 4]> = None;
    let mut start = None;
    let mut end = None;
    let mut summaries: BTreeMap<&str, BTreeMap<String, (Value, usize)>> = BTreeMap::new();
    for item in &all {
        if let Some(Bbox::TwoDimensional(b)) = item.bbox {
            // An antimeridian-crossing box widens the collection to all longitudes.
            let (w, e) = if b[0] > b[2] { (-180.0, 180.0) } else { (b[0], b[2]) };
            bbox = Some(match bbox {
                None => [w, b[1], e, b[3]],
                Some(a) => [a[0].min(w), a[1].min(b[1]), a[2].max(e), a[3].max(b[3])],
            });
        }
        // Time-invariant datasets (fx) span all time by convention; they say nothing about the collection's period.
        let invariant = item.properties.additional_fields.get("fedstac:time_invariant") == Some(&Value::Bool(true));
        if let (Some(s), false) = (item.properties.start_datetime, invariant) {
            start = Some(start.map_or(s, |a: chrono::DateTime<chrono::Utc>| a.min(s)));
        }
        if !invariant {
            end = end.max(item.properties.end_datetime);
        }
        for key in &input.spec.summaries {
            let values = match item.properties.additional_fields.get(key) {
                Some(Value::Array(a)) => a.clone(),
                Some(v) => vec![v.clone()],
                None => continue,
            };
            for v in values {
                let label = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
                summaries.entry(key).or_default().entry(label).or_insert((v, 0)).1 += 1;
            }
        }
    }
    c.extent = Extent {
        spatial: SpatialExtent { bbox: vec![Bbox::TwoDimensional(bbox.unwrap_or([-180.0, -90.0, 180.0, 90.0]))] },
        temporal: TemporalExtent { interval: vec![[start, end]] },
        additional_fields: Map::new(),
    };
    // Facet counts for the collection page, in the recipe's order.
    let facets: Vec<Value> = input
        .spec
        .summaries
        .iter()
        .filter_map(|k| summaries.get(k.as_str()).map(|values| (k, values)))
        .map(|(k, values)| json!({"name": k, "label": k.rsplit(':').next().unwrap_or(k), "values": values.iter().map(|(label, (_, n))| json!({"value": label, "count": n})).collect::<Vec<_>>()}))
        .collect();
    let summaries: Map<String, Value> = summaries.into_iter().map(|(k, v)| (k.to_string(), Value::Array(v.into_values().map(|(v, _)| v).collect()))).collect();
    if !summaries.is_empty() {
        c.summaries = Some(summaries);
    }
    (c, Value::Array(facets))
}

fn collect_items<'a>(node: &'a Node, out: &mut Vec<&'a Item>) {
    out.extend(node.items.iter());
    for child in node.children.values() {
        collect_items(child, out);
    }
}

/// The few fields a listing page shows per item.
fn item_summary(item: &Item) -> Value {
    let p = &item.properties;
    json!({
        "id": item.id,
        "title": p.title,
        "href": format!("./{}.html", item.id),
        "start": p.start_datetime,
        "end": p.end_datetime,
        "files": item.assets.len(),
        "latest": p.additional_fields.get("latest"),
    })
}

fn html_link(href: impl ToString) -> Link {
    Link::new(href, "alternate").r#type("text/html".to_string())
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    Ok(bytes)
}
