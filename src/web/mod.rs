//! pzem-web: the history's page and API, served read-only.
//!
//! - [`http`]: a small blocking HTTP/1.1 server (one `ppoll(2)` I/O thread, a fixed pool
//!   of workers; request heads parsed by `httparse`);
//! - [`app`]: routes, API parameters and JSON, the page's data;
//! - [`page`], [`svg`]: the page and its charts as text (sans-IO).

pub mod app;
pub mod http;
pub mod page;
pub mod svg;
