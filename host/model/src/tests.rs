//! Playbook-level tests: every diagnostic kind with its exact position and text.

use serde_json::{Map, Value, json};

use crate::{ActionCatalog, EvalContext, Playbook, StaticCatalog};

fn parse(src: &str) -> Playbook {
    match Playbook::parse(src, "pb.yaml") {
        Ok(p) => p,
        Err(d) => panic!("unexpected diagnostics:\n{d}"),
    }
}

fn errors(src: &str) -> Vec<String> {
    match Playbook::parse(src, "pb.yaml") {
        Ok(_) => panic!("expected diagnostics"),
        Err(d) => d.iter().map(ToString::to_string).collect(),
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

fn catalog() -> StaticCatalog {
    StaticCatalog::new()
        .with(
            "enrich",
            "classify-ip",
            json!({
                "type": "object",
                "properties": {
                    "ip": {"type": "string", "format": "ipv4"},
                    "depth": {"type": "integer", "minimum": 1},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "opts": {"type": "object", "properties": {"mode": {"enum": ["fast", "slow"]}}}
                },
                "required": ["ip"],
                "additionalProperties": false
            }),
        )
        .with("intel", "lookup", json!({"type": "object"}))
}

const GOOD: &str = r#"name: ip-triage
version: 1
description: Triage an address.
inputs:
  ip: { type: string, format: ipv4, description: "the address" }
  depth: { type: integer, default: 2 }
  note: { type: string, required: false }
steps:
  intel:
    uses: intel.lookup
    with: { value: "${{ inputs.ip }}" }
  classify:
    uses: enrich.classify-ip
    needs: intel
    if: "${{ steps.intel.output.score >= 70 }}"
    with:
      ip: "${{ inputs.ip }}"
      depth: "${{ inputs.depth }}"
      tags: ["t-${{ steps.intel.output.score }}", static]
  report:
    uses: intel.lookup
    needs: [classify, intel]
    if: steps.classify.status == 'succeeded'
    with: { value: "${{ steps.classify.output.kind }} for ${{ inputs.ip }}" }
outputs:
  kind: "${{ steps.classify.output.kind }}"
  summary: "score ${{ steps.intel.output.score }}"
"#;

#[test]
fn good_playbook_parses_and_loads() {
    let pb = parse(GOOD);
    assert_eq!(pb.name, "ip-triage");
    assert_eq!(pb.version, 1);
    assert_eq!(pb.description.as_deref(), Some("Triage an address."));
    assert_eq!(pb.steps.len(), 3);
    assert_eq!(pb.steps[1].plugin, "enrich");
    assert_eq!(pb.steps[1].action, "classify-ip");
    assert_eq!(pb.steps[1].needs, vec![0]);
    assert_eq!(pb.steps[2].needs, vec![1, 0]);
    assert_eq!(pb.topological_order(), &[0, 1, 2]);
    assert_eq!(pb.dependents(0), &[1, 2]);
    assert_eq!(pb.dependents(2), &[] as &[usize]);
    assert_eq!(pb.dependents(99), &[] as &[usize]);
    assert_eq!(pb.step_index("report"), Some(2));
    assert!(pb.inputs["ip"].required);
    assert!(!pb.inputs["depth"].required);
    assert!(!pb.inputs["note"].required);
    assert_eq!(pb.outputs.len(), 2);
    if let Err(d) = Playbook::load(GOOD, "pb.yaml", &catalog()) {
        panic!("{d}");
    }
}

#[test]
fn rendering_a_step_and_condition() {
    let pb = parse(GOOD);
    let inputs = pb
        .resolve_inputs(obj(json!({"ip": "10.1.2.3"})))
        .unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(inputs["depth"], json!(2));
    assert_eq!(inputs["note"], Value::Null);
    let mut ctx = EvalContext::new(&inputs);
    ctx.set_step("intel", "succeeded", &json!({"score": 75}));
    let cond = pb.steps[1].condition.as_ref().unwrap();
    assert_eq!(cond.source(), "steps.intel.output.score >= 70");
    assert_eq!(cond.eval_bool(&ctx), Ok(true));
    assert_eq!(
        pb.steps[1].with.render(&ctx).unwrap(),
        json!({"ip": "10.1.2.3", "depth": 2, "tags": ["t-75", "static"]})
    );
    ctx.set_step("classify", "succeeded", &json!({"kind": "scanner"}));
    assert_eq!(
        pb.steps[2].condition.as_ref().unwrap().eval_bool(&ctx),
        Ok(true)
    );
    assert_eq!(pb.outputs[0].1.render(&ctx).unwrap(), json!("scanner"));
    assert_eq!(pb.outputs[1].1.render(&ctx).unwrap(), json!("score 75"));
    ctx.set_step("intel", "succeeded", &json!({"score": 10}));
    assert_eq!(cond.eval_bool(&ctx), Ok(false));
}

#[test]
fn yaml_syntax_error() {
    assert_eq!(
        errors("name: x\nsteps: [a, b\n"),
        vec!["pb.yaml:3:1: YAML syntax error: while parsing a flow sequence, expected ',' or ']'"]
    );
}

#[test]
fn not_a_mapping_and_empty() {
    assert_eq!(
        errors("- a\n"),
        vec!["pb.yaml:1:1: a playbook must be a mapping, found a list"]
    );
    assert_eq!(
        errors(""),
        vec!["pb.yaml:1:1: a playbook must be a mapping, found null"]
    );
}

#[test]
fn unknown_and_missing_keys() {
    let src = "name: x\nenv: {}\nsteps:\n  a:\n    uses: p.a\n    timout: 3s\n    wiht: {}\n";
    assert_eq!(
        errors(src),
        vec![
            "pb.yaml:1:1: missing required key `version`",
            "pb.yaml:2:1: unknown key `env`; allowed keys: name, version, description, on, concurrency, inputs, steps, on_failure, outputs",
            "pb.yaml:6:5: steps.a: unknown key `timout` (did you mean `timeout`?); allowed keys: uses, needs, if, with, description, for_each, retry, timeout, on_error, concurrency",
            "pb.yaml:7:5: steps.a: unknown key `wiht` (did you mean `with`?); allowed keys: uses, needs, if, with, description, for_each, retry, timeout, on_error, concurrency",
        ]
    );
    assert_eq!(
        errors("version: 1\nsteps:\n  a:\n    with: {}\n"),
        vec![
            "pb.yaml:1:1: missing required key `name`",
            "pb.yaml:3:3: steps.a: missing required key `uses`",
        ]
    );
    assert_eq!(
        errors("name: x\nversion: 1\n"),
        vec!["pb.yaml:1:1: missing required key `steps`"]
    );
}

#[test]
fn wrong_types() {
    let src = "name: 5\nversion: one\ndescription: [x]\nsteps:\n  a:\n    uses: p.a\n    needs: {x: 1}\n    with: [1]\n    if: [1]\n";
    assert_eq!(
        errors(src),
        vec![
            "pb.yaml:1:7: name: expected a string, found an integer",
            "pb.yaml:2:10: version: expected a positive integer, found a string",
            "pb.yaml:3:14: description: expected a string, found a list",
            "pb.yaml:7:12: steps.a.needs: expected a step id or a list of step ids, found a mapping",
            "pb.yaml:8:11: steps.a.with: expected a mapping, found a list",
            "pb.yaml:9:9: steps.a.if: expected an expression string or a boolean, found a list",
        ]
    );
    assert_eq!(
        errors("name: x\nversion: 0\nsteps: {}\n"),
        vec![
            "pb.yaml:2:10: version: expected a positive integer, found an integer",
            "pb.yaml:3:8: steps: a playbook needs at least one step",
        ]
    );
}

#[test]
fn bad_names_and_uses() {
    let src = "name: IP Triage\nversion: 1\nsteps:\n  Bad_Id:\n    uses: noaction\n  ok:\n    uses: P.a\n";
    assert_eq!(
        errors(src),
        vec![
            "pb.yaml:1:7: name: invalid playbook name `IP Triage`: use lowercase letters, digits, `-` and `_`, starting with a letter or digit",
            "pb.yaml:4:3: steps: invalid step id `Bad_Id`: use lowercase letters, digits, `-` and `_`, starting with a letter or digit",
            "pb.yaml:5:11: steps.Bad_Id.uses: expected `plugin.action` (each lowercase letters, digits, `-` and `_`, starting with a letter or digit), found `noaction`",
            "pb.yaml:7:11: steps.ok.uses: expected `plugin.action` (each lowercase letters, digits, `-` and `_`, starting with a letter or digit), found `P.a`",
        ]
    );
}

#[test]
fn needs_unknown_duplicate_and_cycles() {
    let src = "name: x\nversion: 1\nsteps:\n  alpha:\n    uses: p.a\n    needs: [alpah, gamma]\n  beta:\n    uses: p.a\n    needs: [alpha, alpha]\n  gamma:\n    uses: p.a\n    needs: beta\n  solo:\n    uses: p.a\n    needs: [solo]\n";
    assert_eq!(
        errors(src),
        vec![
            "pb.yaml:6:13: steps.alpha.needs[0]: unknown step `alpah` (did you mean `alpha`?)",
            "pb.yaml:6:20: steps.alpha.needs: cycle in needs: alpha -> gamma -> beta -> alpha",
            "pb.yaml:9:20: steps.beta.needs[1]: `alpha` is listed twice",
            "pb.yaml:15:13: steps.solo.needs: cycle in needs: solo -> solo",
        ]
    );
}

#[test]
fn topological_order_prefers_file_order() {
    let src = "name: x\nversion: 1\nsteps:\n  d:\n    uses: p.a\n    needs: [b, c]\n  c:\n    uses: p.a\n    needs: a\n  b:\n    uses: p.a\n  a:\n    uses: p.a\n";
    let pb = parse(src);
    // indexes: d=0, c=1, b=2, a=3
    assert_eq!(pb.topological_order(), &[2, 3, 1, 0]);
    assert_eq!(pb.dependents(3), &[1]);
    assert_eq!(pb.dependents(2), &[0]);
}

#[test]
fn expression_errors() {
    let src = r#"name: x
version: 1
inputs:
  ip: { type: string }
steps:
  a:
    uses: p.a
    with:
      x: "${{ 1 + }}"
      y: "pre ${{ inputs.ip"
      z: "${{ steps.b.output }}"
      w: "${{ steps.a.output }}"
      v: "${{ inputs.port }} ${{ env.HOME }}"
  b:
    uses: p.a
    needs: [a]
    if: "${{ steps.nope.output.x }} and more"
    with:
      s: "${{ steps['geo-ip'].output }}"
      t: "${{ steps.geo-ip.output }}"
      u: "${{ steps.a.result }}"
  geo-ip:
    uses: p.a
    if: "${{ steps.aa.status == 'x' }}"
outputs:
  o: "${{ steps.geo-ip.output }} ${{ steps.zzz.output }}"
"#;
    assert_eq!(
        errors(src),
        vec![
            "pb.yaml:9:10: steps.a.with.x: invalid expression `${{ 1 + }}`: syntax error: unexpected end of input, expected expression",
            "pb.yaml:10:10: steps.a.with.y: unterminated `${{` (missing `}}`)",
            "pb.yaml:11:10: steps.a.with.z: `steps.b` is not upstream of step `a` (add `b` to its `needs`)",
            "pb.yaml:12:10: steps.a.with.w: step `a` cannot reference its own `steps.a`",
            "pb.yaml:13:10: steps.a.with.v: undeclared input `inputs.port` (declared: ip)",
            "pb.yaml:13:10: steps.a.with.v: unknown variable `env` (expressions can use `inputs` and `steps`)",
            "pb.yaml:17:9: steps.b.if: a condition must be one expression, `${{ ... }}` or bare",
            "pb.yaml:19:10: steps.b.with.s: `steps.geo-ip` is not upstream of step `b` (add `geo-ip` to its `needs`)",
            "pb.yaml:20:10: steps.b.with.t: unknown step `steps.geo` (a step id with `-` must be written `steps['geo-ip']`)",
            "pb.yaml:21:10: steps.b.with.u: `steps.a.result`: a step has only `output` and `status`",
            "pb.yaml:24:9: steps.geo-ip.if: unknown step `steps.aa` (did you mean `steps.a`?)",
            "pb.yaml:26:6: outputs.o: unknown step `steps.geo` (a step id with `-` must be written `steps['geo-ip']`)",
            "pb.yaml:26:6: outputs.o: unknown step `steps.zzz`",
        ]
    );
}

#[test]
fn input_declaration_errors() {
    let src = r#"name: x
version: 1
inputs:
  Bad: { type: string }
  a: { type: str }
  b: { type: integer, format: ipv4 }
  c: { type: string, format: ipv5 }
  d: { type: string, format: ipv4, default: "nope" }
  e: { type: integer, default: "1", required: true }
  f: { type: string, color: red }
  g: { description: no type }
steps:
  s:
    uses: p.a
"#;
    assert_eq!(
        errors(src),
        vec![
            "pb.yaml:4:3: inputs: invalid input name `Bad`: use lowercase letters, digits and `_`, not starting with a digit",
            "pb.yaml:5:14: inputs.a.type: unknown type `str`; expected one of: string, integer, number, boolean, object, array",
            "pb.yaml:6:31: inputs.b.format: `format` applies only to string inputs",
            "pb.yaml:7:30: inputs.c.format: unknown format `ipv5` (did you mean `ipv4`?); expected one of: ipv4, ipv6, ip, cidr, url, domain, hostname, email, uuid, hash",
            "pb.yaml:8:45: inputs.d.default: \"nope\" is not a valid IPv4 address",
            "pb.yaml:9:32: inputs.e.default: expected integer, found \"1\"",
            "pb.yaml:9:47: inputs.e.required: an input with a `default` cannot be required",
            "pb.yaml:10:22: inputs.f: unknown key `color`; allowed keys: type, format, description, default, required, tlp",
            "pb.yaml:11:3: inputs.g: missing required key `type`",
        ]
    );
}

#[test]
fn actions_and_schema() {
    let src = r#"name: x
version: 1
inputs:
  ip: { type: string }
steps:
  a:
    uses: enrih.classify-ip
  b:
    uses: enrich.classify-ipp
  c:
    uses: enrich.classify-ip
    with:
      ip: 42
      depth: 0
      tags: [ok, 7]
      opts: { mode: turbo }
      extra: 1
  d:
    uses: enrich.classify-ip
  e:
    uses: enrich.classify-ip
    with:
      ip: "${{ inputs.ip }}"
      depth: "${{ inputs.ip | length }}"
      tags: "${{ [inputs.ip] }}"
  f:
    uses: enrich.classify-ip
    with:
      ip: "not-an-ip"
      depth: "n=${{ inputs.ip }}"
"#;
    let pb = parse(src);
    let d: Vec<String> = pb
        .check_actions(&catalog())
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        d,
        vec![
            "pb.yaml:7:11: steps.a.uses: unknown plugin `enrih` (did you mean `enrich`?)",
            "pb.yaml:9:11: steps.b.uses: unknown action `classify-ipp` in plugin `enrich` (did you mean `classify-ip`?)",
            "pb.yaml:12:5: steps.c.with: Additional properties are not allowed ('extra' was unexpected)",
            "pb.yaml:13:11: steps.c.with.ip: 42 is not of type \"string\"",
            "pb.yaml:14:14: steps.c.with.depth: 0 is less than the minimum of 1",
            "pb.yaml:15:18: steps.c.with.tags[1]: 7 is not of type \"string\"",
            "pb.yaml:16:21: steps.c.with.opts.mode: \"turbo\" is not one of \"fast\" or \"slow\"",
            "pb.yaml:18:3: steps.d.with: \"ip\" is a required property",
            "pb.yaml:29:11: steps.f.with.ip: \"not-an-ip\" is not a \"ipv4\"",
            "pb.yaml:30:14: steps.f.with.depth: \"n=${{ inputs.ip }}\" is not of type \"integer\"",
        ]
    );
    let err = Playbook::load(src, "pb.yaml", &catalog()).unwrap_err();
    assert_eq!(err.len(), 10);
}

#[test]
fn resolve_and_coerce_inputs() {
    let src = r#"name: x
version: 1
inputs:
  ip: { type: string, format: ipv4 }
  n: { type: integer, default: 5 }
  ratio: { type: number, required: false }
  on: { type: boolean, default: false }
  tags: { type: array, default: [] }
  extra: { type: object, required: false }
steps:
  s:
    uses: p.a
"#;
    let pb = parse(src);
    assert_eq!(pb.coerce_cli_input("n", "42"), json!(42));
    assert_eq!(pb.coerce_cli_input("n", "4x"), json!("4x"));
    assert_eq!(pb.coerce_cli_input("ratio", "0.5"), json!(0.5));
    assert_eq!(pb.coerce_cli_input("on", "yes"), json!(true));
    assert_eq!(pb.coerce_cli_input("tags", "[\"a\"]"), json!(["a"]));
    assert_eq!(pb.coerce_cli_input("extra", "{\"k\":1}"), json!({"k": 1}));
    assert_eq!(pb.coerce_cli_input("ip", "1.2.3.4"), json!("1.2.3.4"));
    assert_eq!(pb.coerce_cli_input("unknown", "7"), json!("7"));

    let ok = pb
        .resolve_inputs(obj(json!({"ip": "1.2.3.4", "n": 7})))
        .unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        Value::Object(ok),
        json!({"ip": "1.2.3.4", "n": 7, "ratio": null, "on": false, "tags": [], "extra": null})
    );

    let err = pb
        .resolve_inputs(obj(
            json!({"n": "seven", "ipp": "x", "on": 1, "extra": [1]}),
        ))
        .unwrap_err();
    let msgs: Vec<String> = err.iter().map(ToString::to_string).collect();
    assert_eq!(
        msgs,
        vec![
            "pb.yaml:3:1: unknown input `ipp` (did you mean `ip`?); declared inputs: ip, n, ratio, on, tags, extra",
            "pb.yaml:4:3: missing required input `ip` (string (ipv4))",
            "pb.yaml:5:3: input `n`: expected integer, found \"seven\"",
            "pb.yaml:7:3: input `on`: expected boolean, found 1",
            "pb.yaml:9:3: input `extra`: expected object, found [1]",
        ]
    );
    let err = pb
        .resolve_inputs(obj(json!({"ip": "300.1.1.1"})))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "pb.yaml:4:3: input `ip`: \"300.1.1.1\" is not a valid IPv4 address"
    );
}

#[test]
fn if_forms() {
    let src = "name: x\nversion: 1\ninputs:\n  go: { type: boolean, default: true }\nsteps:\n  a:\n    uses: p.a\n    if: false\n  b:\n    uses: p.a\n    if: inputs.go\n  c:\n    uses: p.a\n    if: \"  ${{ not inputs.go }} \"\n";
    let pb = parse(src);
    let inputs = pb
        .resolve_inputs(Map::new())
        .unwrap_or_else(|d| panic!("{d}"));
    let ctx = EvalContext::new(&inputs);
    let r: Vec<bool> = pb
        .steps
        .iter()
        .map(|s| s.condition.as_ref().unwrap().eval_bool(&ctx).unwrap())
        .collect();
    assert_eq!(r, vec![false, true, false]);
}

#[test]
fn diagnostics_display() {
    let e = Playbook::parse("name: x\n", "a/b.yaml").unwrap_err();
    assert_eq!(
        e.to_string(),
        "a/b.yaml:1:1: missing required key `version`\na/b.yaml:1:1: missing required key `steps`"
    );
}

#[test]
fn hostile_inputs_do_not_panic() {
    let cases = [
        "{",
        "name: [",
        "? [a]\n: b\n",
        "*x",
        "steps:\n  a:\n    uses: p.a\n    with: { x: \"${{ ${{ }} }}\" }\n",
        "steps:\n  a:\n    uses: '.'\n",
        "steps:\n  a:\n    uses: p.a\n    if: \"${{\"\n",
        "steps:\n  a: ~\n",
        "name: x\nversion: 99999999999999999999\nsteps: {a: {uses: p.a}}\n",
        "name: x\nversion: 1\nsteps: {a: {uses: p.a, with: {x: \"${{ steps['\" }}}}\n",
        "\u{feff}name: é\n",
        "name: x\nversion: 1\nsteps: {a: {uses: p.a, with: {x: \"${{ '\\\\' }}\"}}}\n",
    ];
    for c in cases {
        let _ = Playbook::parse(c, "h.yaml");
    }
    // A cyclic playbook never reaches the catalog and never panics in DAG queries.
    assert!(
        Playbook::parse(
            "name: x\nversion: 1\nsteps: {a: {uses: p.a, needs: a}}\n",
            "h"
        )
        .is_err()
    );
}

#[test]
fn catalog_trait_is_object_safe() {
    let c: &dyn ActionCatalog = &catalog();
    assert!(c.input_schema("intel", "lookup").is_ok());
}

#[test]
fn input_tlp_is_checked_and_data_sources_follow_the_with() {
    let src = r#"name: x
version: 1
inputs:
  ip: { type: string, tlp: amber }
  bad: { type: string, tlp: orange }
steps:
  a: { uses: p.a, with: { v: "${{ inputs.ip }}" } }
  b:
    needs: [a]
    uses: p.a
    for_each: "${{ steps.a.output.list }}"
    with: { all: "${{ inputs }}" }
"#;
    let errs = errors(src);
    assert!(
        errs.iter()
            .any(|e| e.contains("inputs.bad.tlp") && e.contains("orange")),
        "{errs:?}"
    );
    let ok = src.replace("  bad: { type: string, tlp: orange }\n", "");
    let pb = Playbook::parse(&ok, "pb.yaml").unwrap();
    assert_eq!(pb.inputs["ip"].tlp, Some(crate::Tlp::Amber));
    let a = pb.steps[0].data_sources();
    assert!(a.inputs.contains("ip") && a.steps.is_empty() && !a.all_inputs);
    let b = pb.steps[1].data_sources();
    assert!(b.steps.contains("a") && b.all_inputs, "{b:?}");
}

/// `n` steps `s0`..: each needs the one before it.
fn chain(n: usize, extra: &str) -> String {
    let mut s = String::from("name: c\nversion: 1\nsteps:\n  s0: { uses: p.a }\n");
    for i in 1..n {
        s.push_str(&format!("  s{i}: {{ uses: p.a, needs: s{} }}\n", i - 1));
    }
    s.push_str(extra);
    s
}

#[test]
fn upstream_references_in_a_long_chain() {
    // The last step reads the first, 3,000 steps up: upstream. `s5` reads `s10`: downstream.
    let n = 3000;
    let mut src = chain(n, "");
    src.push_str(&format!(
        "  last: {{ uses: p.a, needs: s{}, with: {{ v: \"${{{{ steps.s0.output }}}}\" }} }}\n",
        n - 1
    ));
    src.push_str("  side: { uses: p.a, needs: [s5], with: { v: \"${{ steps.s10.output }}\" } }\n");
    let e = errors(&src);
    assert_eq!(
        e,
        [format!(
            "pb.yaml:{}:46: steps.side.with.v: `steps.s10` is not upstream of step `side` (add `s10` to its `needs`)",
            n + 5
        )]
    );
}

#[test]
fn a_step_may_list_many_needs_once() {
    let mut src = chain(2, "");
    let all: Vec<String> = (0..2).map(|i| format!("s{i}")).collect();
    src.push_str(&format!(
        "  fan: {{ uses: p.a, needs: [{}, s1] }}\n",
        all.join(", ")
    ));
    let e = errors(&src);
    assert_eq!(
        e,
        ["pb.yaml:6:37: steps.fan.needs[2]: `s1` is listed twice"]
    );
}

#[test]
fn problems_past_the_cap_are_counted() {
    let mut src = String::from("name: c\nversion: 1\nsteps:\n");
    for i in 0..150 {
        src.push_str(&format!("  s{i}: {{ uses: p.a, needs: nope{i} }}\n"));
    }
    let e = errors(&src);
    assert_eq!(e.len(), crate::limits::MAX_DIAGNOSTICS + 1);
    assert!(
        e[0].starts_with("pb.yaml:4:27: steps.s0.needs: unknown step `nope0`"),
        "{}",
        e[0]
    );
    assert_eq!(
        e[crate::limits::MAX_DIAGNOSTICS],
        "pb.yaml:104:29: 50 more problems not shown (only the first 100 are reported)"
    );
}

#[test]
fn too_many_expressions_is_one_error() {
    let n = crate::limits::MAX_EXPRESSIONS + 10;
    let items = vec!["\"${{ inputs.x }}\""; n].join(", ");
    let src = format!(
        "name: c\nversion: 1\ninputs: {{ x: {{ type: string }} }}\nsteps:\n  s: {{ uses: p.a, with: {{ v: [{items}] }} }}\n"
    );
    let e = errors(&src);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].ends_with(": too many expressions (more than 15000 in one playbook)"),
        "{}",
        e[0]
    );
}

#[test]
fn a_stray_close_in_a_bare_condition_is_a_diagnostic() {
    let e = errors("name: c\nversion: 1\nsteps:\n  s:\n    uses: p.a\n    if: a }} b\n");
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with(
            "pb.yaml:6:9: steps.s.if: invalid expression `a }} b`: `}}` outside a string"
        ),
        "{}",
        e[0]
    );
}

#[test]
fn schema_errors_in_a_wide_with_are_at_their_value() {
    // 40 keys (an index is built for the lookup), one of them an expression, one of the wrong type.
    let catalog = StaticCatalog::new().with(
        "p",
        "a",
        json!({"type": "object", "additionalProperties": {"type": "integer"}}),
    );
    let mut with: Vec<String> = (0..40).map(|i| format!("k{i}: {i}")).collect();
    with[3] = "k3: \"${{ inputs.x }}\"".to_owned();
    with[17] = "k17: seventeen".to_owned();
    let src = format!(
        "name: c\nversion: 1\ninputs: {{ x: {{ type: string }} }}\nsteps:\n  s:\n    uses: p.a\n    with: {{ {} }}\n",
        with.join(", ")
    );
    let e = match Playbook::load(&src, "pb.yaml", &catalog) {
        Ok(_) => panic!("accepted"),
        Err(d) => d.iter().map(ToString::to_string).collect::<Vec<_>>(),
    };
    let col = src
        .lines()
        .nth(6)
        .and_then(|l| l.find("seventeen"))
        .unwrap_or(0)
        + 1;
    assert_eq!(
        e,
        [format!(
            "pb.yaml:7:{col}: steps.s.with.k17: \"seventeen\" is not of type \"integer\""
        )]
    );
}

#[test]
fn long_keys_deep_down_cost_nothing_until_a_problem_is_reported() {
    // Fifty levels of 500-byte keys over 20,000 values: a path per value would be 500 MB of text.
    let mut src = String::from("name: c\nversion: 1\nsteps:\n  s:\n    uses: p.a\n    with:\n");
    let mut indent = 6;
    for level in 0..50 {
        src.push_str(&format!(
            "{}{}{level}:\n",
            " ".repeat(indent),
            "k".repeat(500)
        ));
        indent += 1;
    }
    src.push_str(&" ".repeat(indent));
    src.push_str("leaf: [");
    src.push_str(&vec!["1"; 20_000].join(", "));
    src.push_str(", \"${{ nope }}\"]\n");
    let e = errors(&src);
    assert_eq!(e.len(), 1);
    assert!(
        e[0].contains("leaf[20000]: unknown variable `nope`"),
        "{}",
        e[0]
    );
}
