// Package staleness expires push groups that stopped pushing.
//
// A group's TTL comes, in order of precedence, from the X-Pushrelay-TTL
// header of its last push, from the first matching rule of the
// configuration file, or from --staleness.ttl. When its last successful push
// is older than the TTL, the group is zeroed (every sample value set to 0,
// labels and families kept) or deleted.
//
// A Manager holds the reloadable Policy and a deadline-ordered heap of the
// groups' expiry times. Its Run loop sleeps until the earliest deadline and
// hands the due groups to an Expirer — the gateway's store — which applies
// the expiry through its durable write path and ignores groups pushed in the
// meantime. The store tells the Manager every new deadline after each
// commit, so no tick ever scans all groups.
//
// # Caveats
//
// With no TTL anywhere nothing ever expires, and the exposition is exactly
// the Pushgateway's. A reloaded policy applies from each group's next push.
package staleness
