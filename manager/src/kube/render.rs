//! `skiff-manager render`: the YAML the manager would apply for one function
//! version, as one multi-document stream, without a database or a cluster.

use std::path::PathBuf;

use anyhow::Context;
use skiff_core::names::{FunctionName, UserName};

use super::objects::{FunctionObjects, FunctionSpec, build};
use super::settings::KubeSettings;

#[derive(Debug, Clone, clap::Args)]
pub struct RenderArgs {
    /// Owner of the function
    #[arg(long)]
    pub user: String,
    /// Name of the function
    #[arg(long)]
    pub name: String,
    /// The function's TypeScript source
    #[arg(long)]
    pub file: PathBuf,
    /// Version number to render
    #[arg(long, default_value_t = 1)]
    pub version: i64,
}

/// The objects as YAML documents, in apply order.
pub fn to_yaml(objects: &FunctionObjects) -> Result<String, serde_saphyr::SerializeError> {
    let docs = [
        document(&objects.network_policy)?,
        document(&objects.config_map)?,
        document(&objects.service)?,
        document(&objects.deployment)?,
        document(&objects.autoscaler)?,
    ];
    Ok(docs.iter().map(|d| format!("---\n{d}")).collect())
}

/// One object as YAML. A long one-line value (an annotation, the list of denied
/// networks) stays on one line instead of being folded at 80 columns, so it can
/// be found with grep; a multi-line one (the function's source) is a literal block.
fn document<T: serde::Serialize>(object: &T) -> Result<String, serde_saphyr::SerializeError> {
    let options = serde_saphyr::ser_options! { folded_wrap_chars: usize::MAX };
    serde_saphyr::to_string_with_options(object, options)
}

pub fn run(settings: &KubeSettings, args: &RenderArgs) -> anyhow::Result<String> {
    settings.validate()?;
    let user = UserName::parse(&args.user)?;
    let name = FunctionName::parse(&args.name)?;
    anyhow::ensure!(args.version >= 1, "--version must be at least 1");
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let source = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{} is not UTF-8 text", args.file.display()))?;
    // A file rendered by hand is a module as written: JavaScript or TypeScript by its name.
    let javascript = args
        .file
        .extension()
        .is_some_and(|e| e == "js" || e == "mjs");
    let spec = FunctionSpec {
        user: user.as_str(),
        function: name.as_str(),
        version: args.version,
        source: &source,
        module_file: skiff_core::layout::Layout::module_file(javascript),
    };
    Ok(to_yaml(&build(settings, &spec))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::objects::test_support::spec;

    #[test]
    fn renders_five_documents_in_apply_order() {
        let yaml = to_yaml(&build(&KubeSettings::default(), &spec())).unwrap();
        let kinds: Vec<&str> = yaml
            .lines()
            .filter_map(|l| l.strip_prefix("kind: "))
            .collect();
        assert_eq!(
            kinds,
            [
                "NetworkPolicy",
                "ConfigMap",
                "Service",
                "Deployment",
                "HorizontalPodAutoscaler"
            ]
        );
        assert_eq!(yaml.matches("---\n").count(), 5);
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&yaml).unwrap();
        assert_eq!(docs.len(), 5);
        for v in docs {
            assert!(v.get("apiVersion").is_some());
        }
    }

    #[test]
    fn refuses_invalid_names_before_reading_anything() {
        let args = RenderArgs {
            user: "Al".into(),
            name: "x".into(),
            file: "/nonexistent".into(),
            version: 1,
        };
        let err = run(&KubeSettings::default(), &args)
            .unwrap_err()
            .to_string();
        assert!(err.contains("user name"), "{err}");
    }
}
