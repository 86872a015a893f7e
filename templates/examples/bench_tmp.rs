use mailfarm_templates::*;
use std::time::Instant;
fn main() {
    let dir = "/work/main/examples/newsletter";
    let text = std::fs::read_to_string(format!("{dir}/body.txt.hbs")).unwrap();
    let html = std::fs::read_to_string(format!("{dir}/body.html.hbs")).unwrap();
    let csv = std::fs::read_to_string(format!("{dir}/recipients.csv")).unwrap();
    let mut lines = csv.lines();
    let names: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    let rows: Vec<Vec<String>> = lines.take(2000).map(|l| l.split(',').map(String::from).collect()).collect();
    let t = MessageTemplate::compile(
        &TemplateSources { subject: "{{first_name}}, your autumn picks from {{city}}".into(), text, html: Some(html) },
        MessageSettings { campaign_id: "autumn-2026".into(), from: "Acme Weekly <news@acme.example>".into(), reply_to: Some("editor@acme.example".into()), list_id: "weekly.acme.example".into(), bounce_domain: "bounces.acme.example".into(), list_unsubscribe: Some("https://acme.example/unsubscribe?u={{email}}".into()) },
        names, VerpSigner::new(b"k"),
    ).unwrap();
    let m = t.render(0, &rows[0][0], &rows[0]).unwrap();
    println!("size {}", m.data.len());
    let n = 20000;
    let start = Instant::now();
    let mut bytes = 0;
    for i in 0..n { let r = &rows[i % rows.len()]; bytes += t.render(i as u64, &r[0], r).unwrap().data.len(); }
    let el = start.elapsed();
    println!("{} msgs/s, {} MB/s", n as f64 / el.as_secs_f64(), bytes as f64 / el.as_secs_f64() / 1e6);
}
