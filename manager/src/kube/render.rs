//! `skiff-manager render`: the YAML the manager would apply for one function
//! version, as one multi-document stream, without a database or a cluster.
//! The env given with `--env` is in the output's Secret (base64, which is
//! not encryption): render with stand-in values.

use std::path::PathBuf;

use anyhow::Context;
use skiff_core::fnconfig::{FunctionConfig, FunctionSettings, SettingsPolicy, check_env_name};
use skiff_core::names::{FunctionName, UserName};

use super::objects::{FunctionObjects, FunctionSpec, VersionConfig, build};
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
    /// An env var of the function, NAME=VALUE (repeatable)
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// The function's memory_mb setting
    #[arg(long)]
    pub memory_mb: Option<u64>,
    /// The function's timeout_secs setting
    #[arg(long)]
    pub timeout_secs: Option<u64>,
    /// The function's concurrency setting
    #[arg(long)]
    pub concurrency: Option<u64>,
    /// The function's min_instances setting
    #[arg(long)]
    pub min_instances: Option<u64>,
    /// The function's max_instances setting
    #[arg(long)]
    pub max_instances: Option<u64>,
}

impl RenderArgs {
    fn config(&self, policy: &SettingsPolicy) -> anyhow::Result<VersionConfig> {
        let mut config = FunctionConfig {
            settings: FunctionSettings {
                memory_mb: self.memory_mb,
                timeout_secs: self.timeout_secs,
                concurrency: self.concurrency,
                min_instances: self.min_instances,
                max_instances: self.max_instances,
                idle_timeout_secs: None,
            },
            ..FunctionConfig::default()
        };
        for pair in &self.env {
            let Some((name, value)) = pair.split_once('=') else {
                anyhow::bail!("--env takes NAME=VALUE, got {pair:?}");
            };
            check_env_name(name)?;
            config.env.insert(name.to_owned(), value.to_owned());
        }
        config.check()?;
        policy.check(&config.settings)?;
        let vars: Vec<(String, String)> = config.env.clone().into_iter().collect();
        let identity = config.to_stored().unwrap_or_default();
        Ok(VersionConfig::new(
            &vars,
            config.settings,
            policy,
            identity.as_bytes(),
        ))
    }
}

/// The objects as YAML documents, in apply order.
pub fn to_yaml(objects: &FunctionObjects) -> Result<String, serde_saphyr::SerializeError> {
    let docs = [
        document(&objects.network_policy)?,
        document(&objects.config_map)?,
        document(&objects.secret)?,
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

/// Renders with the operator's default settings policy.
pub fn run(settings: &KubeSettings, args: &RenderArgs) -> anyhow::Result<String> {
    run_with_policy(settings, &skiff_core::settings::defaults()?, args)
}

pub fn run_with_policy(
    settings: &KubeSettings,
    policy: &SettingsPolicy,
    args: &RenderArgs,
) -> anyhow::Result<String> {
    settings.validate()?;
    let user = UserName::parse(&args.user)?;
    let name = FunctionName::parse(&args.name)?;
    anyhow::ensure!(args.version >= 1, "--version must be at least 1");
    let config = args.config(policy)?;
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
        config: &config,
    };
    Ok(to_yaml(&build(settings, &spec))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::objects::test_support::spec;

    fn args(env: &[&str]) -> RenderArgs {
        RenderArgs {
            user: "alice".into(),
            name: "hello".into(),
            file: "/nonexistent".into(),
            version: 1,
            env: env.iter().map(|s| (*s).to_owned()).collect(),
            memory_mb: None,
            timeout_secs: None,
            concurrency: None,
            min_instances: None,
            max_instances: None,
        }
    }

    #[test]
    fn env_arguments_are_checked_like_the_api_checks_them() {
        let policy: SettingsPolicy = skiff_core::settings::defaults().unwrap();
        let c = args(&["B=2", "A=x=y"]).config(&policy).unwrap();
        assert_eq!(c.names(), ["A", "B"]);
        assert_eq!(c.env_json(), r#"{"A":"x=y","B":"2"}"#);
        for bad in ["lower=1", "SKIFF_X=1", "NOEQUALS", "LD_PRELOAD=/x"] {
            assert!(args(&[bad]).config(&policy).is_err(), "{bad}");
        }
        let mut big = args(&[]);
        big.memory_mb = Some(1 << 40);
        assert!(big.config(&policy).is_err());
    }

    #[test]
    fn renders_six_documents_in_apply_order() {
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
                "Secret",
                "Service",
                "Deployment",
                "HorizontalPodAutoscaler"
            ]
        );
        assert_eq!(yaml.matches("---\n").count(), 6);
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&yaml).unwrap();
        assert_eq!(docs.len(), 6);
        for v in docs {
            assert!(v.get("apiVersion").is_some());
        }
    }

    #[test]
    fn refuses_invalid_names_before_reading_anything() {
        let args = RenderArgs {
            user: "Al".into(),
            ..args(&[])
        };
        let err = run(&KubeSettings::default(), &args)
            .unwrap_err()
            .to_string();
        assert!(err.contains("user name"), "{err}");
    }
}
