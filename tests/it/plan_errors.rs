//! Bad plans get errors that name the file and the field, and nothing starts.

use super::support::*;

#[test]
fn a_bad_plan_names_the_field_and_exits_2() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cases = [
        (
            "name = 'x'\n[[models]]\nname='m'\nengine='llama-server'\nruntime='process'\nmodel_path='/m'\nmemory_limit_gb = -1\n[[prompts]]\nid='p'\ntext='t'\n",
            "models[0].memory_limit_gb",
        ),
        ("name = 'x'\n[defaults]\nrepetitions = 'three'\n", "repetitions"),
        ("name = 'x'\n[[models]]\nname='m'\nengine='vllm'\nruntime='process'\n", "vllm"),
        (
            "name = 'x'\n[[models]]\nname='m'\nengine='ollama'\nruntime='docker'\nimage='ollama/ollama'\n[[prompts]]\nid='p'\ntext='t'\n",
            "models[0].tag",
        ),
        ("name = 'x'\nmodles = []\n", "modles"),
    ];
    for (text, field) in cases {
        let p = tmp.path().join("bad.toml");
        std::fs::write(&p, text).expect("write");
        for args in [vec!["up"], vec!["plan", "check"]] {
            let o = threadcycle().args(&args).arg(&p).output().expect("run");
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{args:?} {text}: {}", show(&o));
            assert!(err.contains(field), "{args:?}: error does not name `{field}`: {err}");
            assert!(err.contains("bad.toml"), "{args:?}: error does not name the file: {err}");
        }
    }
    let o = threadcycle().args(["up", "/no/such/plan.toml"]).output().expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/no/such/plan.toml"));
}
