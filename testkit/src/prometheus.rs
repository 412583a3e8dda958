//! Reading a `/metrics` answer (the Prometheus text format) as a test does:
//! each series, `name{labels}` exactly as written, and its value.

use std::collections::BTreeMap;

pub struct Scrape {
    /// The whole text, for failure messages.
    pub text: String,
    values: BTreeMap<String, f64>,
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let values = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_owned(), value.parse().ok()?))
            })
            .collect();
        Scrape {
            text: text.to_owned(),
            values,
        }
    }

    /// `GET url`, which must answer 200 in the Prometheus text format.
    pub async fn get(url: &str) -> Scrape {
        let r = reqwest::get(url).await.unwrap();
        assert_eq!(r.status(), 200, "GET {url}");
        let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        Scrape::parse(&r.text().await.unwrap())
    }

    /// The value of `series` (`name` or `name{label="v",…}`); panics when absent.
    pub fn value(&self, series: &str) -> f64 {
        match self.values.get(series) {
            Some(v) => *v,
            None => panic!("no series {series} in:\n{}", self.text),
        }
    }

    /// Whether a family of this name (any series) is in the text.
    pub fn has_family(&self, name: &str) -> bool {
        self.text.lines().any(|l| {
            l.strip_prefix("# TYPE ")
                .is_some_and(|t| t.split(' ').next() == Some(name))
        })
    }
}
