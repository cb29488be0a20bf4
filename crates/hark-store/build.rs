//! Embeds the schema migrations: lists `migrations/{sqlite,postgres}/*.sql` into
//! `$OUT_DIR/migrations.rs` (version, description, `include_str!` of the file), so a new
//! migration file is picked up without code changes and without sqlx's macros, whose
//! proc-macro build compiles both database drivers a second time for the host.

use std::fmt::Write as _;
use std::path::Path;
use std::{env, fs};

fn main() {
    let manifest = env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let out_dir = env::var("OUT_DIR").unwrap_or_else(|_| ".".into());
    let mut code = String::new();
    for (name, dir) in [("SQLITE", "sqlite"), ("POSTGRES", "postgres")] {
        let dir = Path::new(&manifest).join("migrations").join(dir);
        println!("cargo:rerun-if-changed={}", dir.display());
        let mut files: Vec<(i64, String, String)> = Vec::new();
        let entries = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading migrations in {}: {e}", dir.display()));
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| panic!("reading migrations in {}: {e}", dir.display()))
                .path();
            let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
                continue;
            };
            // sqlx's own naming: <version>_<description>.sql, `_` read as a space.
            let Some((version, rest)) = file.split_once('_') else {
                continue;
            };
            let Some(description) = rest.strip_suffix(".sql") else {
                continue;
            };
            let version: i64 = version
                .parse()
                .unwrap_or_else(|_| panic!("migration {file} has no numeric version"));
            files.push((
                version,
                description.replace('_', " "),
                path.display().to_string(),
            ));
        }
        files.sort();
        for pair in files.windows(2) {
            assert!(
                pair[0].0 != pair[1].0,
                "two migrations numbered {}",
                pair[0].0
            );
        }
        let _ = writeln!(code, "pub(crate) static {name}: &[(i64, &str, &str)] = &[");
        for (version, description, path) in files {
            let _ = writeln!(
                code,
                "    ({version}, {description:?}, include_str!({path:?})),"
            );
        }
        let _ = writeln!(code, "];");
    }
    fs::write(Path::new(&out_dir).join("migrations.rs"), code)
        .unwrap_or_else(|e| panic!("writing migrations.rs: {e}"));
}
