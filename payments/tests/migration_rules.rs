//! The rules a migration must follow so that a rolling deploy keeps serving while it
//! runs ([`service_kit::migrations::check`]), applied to every payments migration written
//! since they were set.

use service_kit::migrations::{RULES_SINCE, check};

#[test]
fn every_migration_since_the_rules_follows_them() {
    let migrator = payments::store::migrator();
    let mut checked = 0;
    for migration in migrator.iter().filter(|m| m.version >= RULES_SINCE) {
        let problems = check(migration);
        assert!(
            problems.is_empty(),
            "migration {} ({}):\n{}",
            migration.version,
            migration.description,
            problems.join("\n")
        );
        checked += 1;
    }
    // The rules are not vacuous: a migration written before them, which built an index
    // under a lock that stops writes, would not pass them (it has run everywhere, and
    // a migration cannot change once applied, so it stays as it is).
    let before = migrator
        .iter()
        .find(|m| m.version == 20261127000002)
        .expect("migration 20261127000002");
    assert!(!check(before).is_empty(), "20261127000002 passes the rules");
    println!("{checked} migrations since {RULES_SINCE} follow the rules");
}
