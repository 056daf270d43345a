//! The in-browser viewer arrives with the client-side search issue; until then
//! the generator's static HTML pages are the site's user interface.
fn main() {}
