"""The two tiers' memory, idle and under load, for the Kubernetes requests and limits
(`./pants measure-memory -- --help`, docs/deploy.md "Resources")."""
