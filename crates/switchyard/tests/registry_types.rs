//! A registry table without `type` is refused with a message naming every backend the
//! binary knows, read from the catalog (so a new backend cannot be left out of it).

#[test]
fn missing_type_names_every_backend() {
    let value = serde_json::json!({"registries": {"r": {"url": "http://127.0.0.1:1/"}}});
    let (_, issues) = switchyard::config::decode(&value);
    let issue = issues
        .iter()
        .map(ToString::to_string)
        .find(|issue| issue.starts_with("registries.r.type"))
        .unwrap_or_else(|| panic!("no issue for registries.r.type: {issues:?}"));
    let kinds = switchyard::catalog::catalog().kinds();
    assert!(kinds.len() >= 11, "{kinds:?}");
    for kind in kinds {
        assert!(
            issue.split(['(', ')', '|', ' ']).any(|word| word == kind),
            "{kind} not named in {issue:?}"
        );
    }
}
