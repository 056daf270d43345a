//! Crawlable HTML pages for every catalogue, collection and item, rendered
//! with minijinja from `templates/` (built into the binary, or a directory
//! named in the site config). Auto-escaping is on for `.html`, and every href
//! taken from metadata passes `safe_href`, because partner metadata is untrusted.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use minijinja::Environment;
use serde::Serialize;

const BUILTIN: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/base.html")),
    ("catalog.html", include_str!("../../templates/catalog.html")),
    ("collection.html", include_str!("../../templates/collection.html")),
    ("item.html", include_str!("../../templates/item.html")),
];

#[derive(Debug, Clone, Copy)]
pub enum PageKind {
    Catalog,
    Collection,
    Item,
}

pub struct HtmlPages {
    env: Environment<'static>,
}

impl HtmlPages {
    /// Loads templates from `dir`, or the built-in ones.
    pub fn new(dir: Option<&Path>) -> Result<HtmlPages> {
        let mut env = Environment::new();
        for (name, builtin) in BUILTIN {
            let source = match dir {
                Some(d) => std::fs::read_to_string(d.join(name)).with_context(|| format!("reading template {}", d.join(name).display()))?,
                None => builtin.to_string(),
            };
            env.add_template_owned(name.to_string(), source).map_err(|e| anyhow!("template {name}: {e}"))?;
        }
        env.add_filter("safe_href", safe_href);
        env.add_filter("human_size", human_size);
        env.add_filter("date", |s: String| s.get(..10).unwrap_or(&s).to_string());
        Ok(HtmlPages { env })
    }

    pub fn render<T: Serialize>(&self, kind: PageKind, page: &T) -> Result<String> {
        let name = Self::template_name(kind);
        let template = self.env.get_template(name).map_err(|e| anyhow!("{name}: {e}"))?;
        template.render(minijinja::Value::from_serialize(page)).map_err(|e| anyhow!("rendering {name}: {e:#}"))
    }

    /// Renders a catalogue or collection page into `out`, its `items` read
    /// from `rows` while the page renders: a listing of any length costs one
    /// row of memory at a time.
    pub fn render_listing<T: Serialize>(&self, kind: PageKind, page: &T, rows: impl ListingRows, out: impl std::io::Write) -> Result<()> {
        let name = Self::template_name(kind);
        let template = self.env.get_template(name).map_err(|e| anyhow!("{name}: {e}"))?;
        let ctx = minijinja::context! { items => minijinja::Value::from_object(Listing(rows)), ..minijinja::Value::from_serialize(page) };
        template.render_captured_to(ctx, out).map(|_| ()).map_err(|e| anyhow!("rendering {name}: {e:#}"))
    }

    fn template_name(kind: PageKind) -> &'static str {
        match kind {
            PageKind::Catalog => "catalog.html",
            PageKind::Collection => "collection.html",
            PageKind::Item => "item.html",
        }
    }
}

/// The rows of a listing page, handed to the template one at a time (it may
/// go through them more than once: `{% if items %}`, `| length`, `for`).
pub trait ListingRows: std::fmt::Debug + Send + Sync + 'static {
    fn len(&self) -> usize;
    fn rows(&self) -> Box<dyn Iterator<Item = serde_json::Value> + Send + Sync>;
}

#[derive(Debug)]
struct Listing<R>(R);

impl<R: ListingRows> minijinja::value::Object for Listing<R> {
    fn repr(self: &std::sync::Arc<Self>) -> minijinja::value::ObjectRepr {
        minijinja::value::ObjectRepr::Iterable
    }

    fn enumerate(self: &std::sync::Arc<Self>) -> minijinja::value::Enumerator {
        minijinja::value::Enumerator::Iter(Box::new(self.0.rows().map(|row| minijinja::Value::from_serialize(&row))))
    }

    fn enumerator_len(self: &std::sync::Arc<Self>) -> Option<usize> {
        Some(self.0.len())
    }
}

/// Keeps http(s) URLs and plain relative paths; anything else (javascript:,
/// data:, file:, protocol-relative) becomes a dead link.
pub fn safe_href(href: String) -> String {
    let lower = href.trim().to_ascii_lowercase();
    let scheme = lower.split_once(':').map(|(s, _)| s).filter(|s| !s.contains('/'));
    let ok = match scheme {
        Some(s) => s == "http" || s == "https",
        None => !lower.starts_with("//") && !lower.contains('\\'),
    };
    if ok {
        href
    } else {
        "#".into()
    }
}

/// Takes any number: partner metadata may hold floats or negatives, and a page must still render.
fn human_size(bytes: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_and_relative_hrefs_survive() {
        assert_eq!(safe_href("https://a.b/c.nc".into()), "https://a.b/c.nc");
        assert_eq!(safe_href("./x.json".into()), "./x.json");
        for bad in ["javascript:alert(1)", " JavaScript:x", "file:///etc/passwd", "data:text/html,x", "//evil.org/x"] {
            assert_eq!(safe_href(bad.into()), "#", "{bad}");
        }
    }

    #[test]
    fn pages_escape_metadata() {
        let pages = HtmlPages::new(None).unwrap();
        let page = serde_json::json!({
            "kind": "item", "breadcrumbs": [], "json_href": "./x.json",
            "stac": {"id": "<script>alert(1)</script>", "properties": {"title": "<b>t</b>"}, "assets": {"f.nc": {"href": "javascript:alert(1)", "file:size": 10}}, "links": []}
        });
        let html = pages.render(PageKind::Item, &page).unwrap();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;"));
        assert!(!html.contains("href=\"javascript:"));
    }
}
