use promptops_core::*;
#[test]
fn dbg_defaults() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("m")).unwrap();
    std::fs::write(dir.path().join("m/a.prompt"), "---\nschema:\n  q: string\n  c?: {type: boolean, default: true}\n---\n{{ q }} {% if c %}yes{% endif %}").unwrap();
    let client = Client::builder().prompts_dir(dir.path()).build().unwrap();
    let p = client.get("m/a").unwrap();
    eprintln!("{:?}", p.schema());
    let r = p.render(&context!{ q => "hi" });
    eprintln!("{:?}", r);
}
