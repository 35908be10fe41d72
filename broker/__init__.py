"""The broker's accounts: Mosquitto password and ACL files generated from the registry
(docs/broker-auth.md). Pure rendering and hashing here; SQL in storage/, the job in worker/."""
