//! The deployment files, checked without a container engine: the compose file against the
//! Compose Specification schema (from the docker-compose package on PyPI) and every Kubernetes
//! manifest against the Kubernetes OpenAPI schemas (kubernetes-validate from PyPI); the configs
//! they mount pass `synapsor check`; ports, probes, mounted paths and drain times agree with
//! those configs; every image they build comes from this repository's Dockerfile.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_yaml::Value;

const KUBERNETES: &str = "1.33.0";
const PACKAGES: [&str; 2] = ["kubernetes-validate==1.37.0", "jsonschema==4.25.1"];
const COMPOSE_WHEEL: &str = "docker-compose==1.29.2";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// (PYTHONPATH with the validators, the Compose schema file), installed once per machine.
fn tools() -> &'static (PathBuf, PathBuf) {
    static TOOLS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("deploy-tools");
        let deps = dir.join("deps");
        let schema = dir.join("compose_spec.json");
        let ready = Command::new("python3")
            .args(["-c", "import kubernetes_validate, jsonschema, yaml"])
            .env("PYTHONPATH", &deps)
            .status()
            .is_ok_and(|s| s.success());
        let pip = |args: &[&str]| {
            let out = Command::new("python3")
                .args(["-m", "pip"])
                .args(args)
                .args(["--quiet", "--disable-pip-version-check"])
                .output()
                .expect("python3 -m pip");
            assert!(
                out.status.success(),
                "pip {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        if !ready {
            let mut args = vec!["install", "--target", deps.to_str().unwrap()];
            args.extend(PACKAGES);
            pip(&args);
        }
        if !schema.exists() {
            let wheels = dir.join("wheels");
            pip(&["download", "--no-deps", "-d", wheels.to_str().unwrap(), COMPOSE_WHEEL]);
            let extract = format!(
                "import glob, zipfile\nz = zipfile.ZipFile(glob.glob('{}/docker_compose-*.whl')[0])\nopen('{}', 'wb').write(z.read('compose/config/compose_spec.json'))",
                wheels.display(),
                schema.display()
            );
            let ok = Command::new("python3").args(["-c", &extract]).status().unwrap();
            assert!(ok.success(), "extracting the compose schema failed");
        }
        (deps, schema)
    })
}

fn validate(args: &[&str]) {
    let (deps, _) = tools();
    let out = Command::new("python3")
        .arg(root().join("tests/deploy/validate.py"))
        .args(args)
        .env("PYTHONPATH", deps)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// `synapsor check` on a config text, run from a directory where `plugins/` holds the built
/// plugins (as the image's working directory does).
fn check(config: &str, tag: &str) -> synapsor::config::Config {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("deploy-check-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let _ = std::fs::remove_file(dir.join("plugins"));
    let plugins = root().join("plugins/build");
    if !plugins.join("header_rewrite.wasm").exists() {
        let ok = Command::new("bash")
            .arg(root().join("plugins/build.sh"))
            .status()
            .unwrap();
        assert!(ok.success(), "plugins/build.sh failed");
    }
    std::os::unix::fs::symlink(&plugins, dir.join("plugins")).unwrap();
    let file = dir.join("synapsor.yaml");
    std::fs::write(&file, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_synapsor"))
        .args(["check", "-c"])
        .arg(&file)
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "synapsor check:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    synapsor::config::load(&file).unwrap().config
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| &v[*k])
}

#[test]
fn compose_file_is_valid_and_agrees_with_its_config_and_dockerfile() {
    let dir = root().join("deployments/docker");
    let compose_file = dir.join("compose.yaml");
    let (_, schema) = tools();
    validate(&[
        "compose",
        schema.to_str().unwrap(),
        compose_file.to_str().unwrap(),
    ]);
    let compose = &yaml_docs(&compose_file)[0];
    let services = compose["services"].as_mapping().unwrap();
    for want in ["gateway", "backend-1", "backend-2", "redis", "client"] {
        assert!(services.contains_key(want), "service {want}");
    }
    // Every image built comes from this repository's Dockerfile; the services that run the
    // same image use what the gateway service builds.
    let built: Vec<&str> = services
        .values()
        .filter(|svc| svc.get("build").is_some())
        .map(|svc| {
            let ctx = dir.join(s(svc, &["build", "context"]).as_str().unwrap());
            let df = ctx.join(s(svc, &["build", "dockerfile"]).as_str().unwrap());
            assert_eq!(ctx.canonicalize().unwrap(), root().canonicalize().unwrap());
            assert!(df.exists(), "{}", df.display());
            svc["image"].as_str().unwrap()
        })
        .collect();
    assert_eq!(built, ["synapsor:local"]);
    for (name, svc) in services {
        let image = svc["image"].as_str().unwrap();
        assert!(
            built.contains(&image) || image.starts_with("redis:"),
            "{name:?} uses {image}, built nowhere here"
        );
    }
    // The config it mounts passes `synapsor check`; the ports it publishes are the config's.
    let gw = &compose["services"]["gateway"];
    let mount = gw["volumes"][0].as_str().unwrap();
    let (src, dst) = mount.split_once(':').unwrap();
    assert_eq!(dst, "/etc/synapsor/synapsor.yaml:ro");
    let cfg = check(&std::fs::read_to_string(dir.join(src)).unwrap(), "compose");
    let listen = cfg.listeners[0].listen.port();
    let admin = cfg.admin.listen.port();
    let ports: Vec<&str> = gw["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(
        ports,
        [format!("{listen}:{listen}"), format!("{admin}:{admin}")]
    );
    // The Dockerfile: config path, exposed ports, the health check on the admin port, a
    // non-root user.
    let df = std::fs::read_to_string(dir.join("Dockerfile")).unwrap();
    assert!(df.contains("COPY deployments/docker/synapsor.yaml /etc/synapsor/synapsor.yaml"));
    assert!(df.contains(r#"CMD ["run", "--config", "/etc/synapsor/synapsor.yaml"]"#));
    assert!(df.contains(&format!("EXPOSE {listen} {admin}")), "EXPOSE");
    assert!(df.contains(&format!(
        "\"--admin\", \"127.0.0.1:{admin}\", \"--path\", \"/healthz\""
    )));
    let user = df.lines().rfind(|l| l.starts_with("USER ")).unwrap();
    assert!(!user.contains(" root") && !user.contains(" 0"), "{user}");
}

/// The manifests of a kustomization, following `resources` into directories.
fn manifests(dir: &Path, out: &mut Vec<PathBuf>) {
    let k = dir.join("kustomization.yaml");
    let doc = &yaml_docs(&k)[0];
    for r in doc["resources"].as_sequence().unwrap() {
        let p = dir.join(r.as_str().unwrap());
        assert!(p.exists(), "{} lists {}", k.display(), p.display());
        if p.is_dir() {
            manifests(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn kubernetes_manifests_are_valid_and_agree_with_the_config() {
    let overlay = root().join("deployments/kubernetes/overlays/example");
    let mut files = Vec::new();
    manifests(&overlay, &mut files);
    let mut args = vec!["k8s", KUBERNETES];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    validate(&args);
    let docs: Vec<Value> = files.iter().flat_map(|f| yaml_docs(f)).collect();

    let cm = find(&docs, "ConfigMap", "synapsor-config");
    let cfg = check(cm["data"]["synapsor.yaml"].as_str().unwrap(), "k8s");
    let (listen, admin) = (cfg.listeners[0].listen.port(), cfg.admin.listen.port());
    assert!(
        cfg.admin.listen.ip().is_unspecified(),
        "probes reach the pod IP"
    );

    let dep = find(&docs, "Deployment", "synapsor");
    assert_eq!(dep["spec"]["replicas"], 2);
    let pod = &dep["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let port = |name: &str| {
        c["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["containerPort"]
            .as_u64()
            .unwrap() as u16
    };
    assert_eq!((port("grpc"), port("admin")), (listen, admin));
    assert_eq!(s(c, &["readinessProbe", "httpGet", "path"]), "/readyz");
    assert_eq!(s(c, &["readinessProbe", "httpGet", "port"]), "admin");
    assert_eq!(s(c, &["livenessProbe", "httpGet", "path"]), "/healthz");
    assert_eq!(s(c, &["livenessProbe", "httpGet", "port"]), "admin");
    // The config is where the args say, from the ConfigMap.
    assert_eq!(c["args"][2], "/etc/synapsor/synapsor.yaml");
    assert_eq!(c["volumeMounts"][0]["mountPath"], "/etc/synapsor");
    let vol = &pod["volumes"][0];
    assert_eq!(vol["name"], c["volumeMounts"][0]["name"]);
    assert_eq!(vol["configMap"]["name"], "synapsor-config");
    // Shutdown: preStop, then the drain, within the grace period.
    let pre_stop: u64 = c["lifecycle"]["preStop"]["exec"]["command"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    let drain = cfg.listeners[0].drain_timeout.0.as_secs();
    assert!(
        grace >= pre_stop + drain,
        "grace {grace}s < preStop {pre_stop}s + drain {drain}s"
    );
    // Non-root, read-only root filesystem, requests and limits.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    for k in ["requests", "limits"] {
        assert!(c["resources"][k]["cpu"].is_string() && c["resources"][k]["memory"].is_string());
    }
    // The Service, PDB and HPA point at this Deployment's pods and ports.
    let svc = find(&docs, "Service", "synapsor");
    let targets: Vec<&str> = svc["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["targetPort"].as_str().unwrap())
        .collect();
    assert_eq!(targets, ["grpc", "admin"]);
    let labels = &dep["spec"]["template"]["metadata"]["labels"];
    assert_eq!(svc["spec"]["selector"], *labels);
    assert_eq!(
        find(&docs, "PodDisruptionBudget", "synapsor")["spec"]["selector"]["matchLabels"],
        *labels
    );
    let hpa = find(&docs, "HorizontalPodAutoscaler", "synapsor");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "synapsor");
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["name"], "cpu");

    // The example backend: a headless Service that the config's dns:// endpoint names.
    let backend = find(&docs, "Service", "echo-backend");
    assert_eq!(backend["spec"]["clusterIP"], "None");
    let bport = backend["spec"]["ports"][0]["port"].as_u64().unwrap();
    let ep = &cfg.upstreams[0].endpoints[0].address;
    assert_eq!(*ep, format!("dns://echo-backend:{bport}"));
    // Redis, as the rate limit's URL names it.
    let redis = find(&docs, "Service", "redis");
    let rport = redis["spec"]["ports"][0]["port"].as_u64().unwrap();
    let synapsor::config::StageConfig::RateLimit(rl) = &cfg.listeners[0].interceptors[1] else {
        panic!("the second stage is the shared rate limit");
    };
    assert_eq!(
        rl.backend.as_ref().unwrap().redis,
        format!("redis://redis:{rport}/0")
    );
}
