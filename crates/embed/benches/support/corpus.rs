//! Deterministic SRE-style text for the benchmarks: diagnostic steps of about 100 words and
//! search queries of about 20, from a fixed seed, so every run measures the same input.

/// SplitMix64: tiny, deterministic, good enough to pick words.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const TIMES: &[&str] = &[
    "At 02:14 UTC",
    "Around 09:40",
    "Shortly after the deploy",
    "At 17:05 UTC",
    "Overnight",
    "During the traffic peak",
    "Twenty minutes later",
    "At 11:32",
    "Right after failover",
];
const ACTORS: &[&str] = &[
    "the on-call engineer",
    "the database team",
    "the incident commander",
    "our SRE",
    "the platform team",
    "the network engineer",
    "the storage on-call",
    "the release captain",
];
const ACTIONS: &[&str] = &[
    "checked",
    "restarted",
    "rolled back",
    "scaled up",
    "drained",
    "inspected",
    "paused",
    "failed over",
    "rotated",
    "throttled",
    "cordoned",
    "re-indexed",
];
const COMPONENTS: &[&str] = &[
    "the Postgres primary",
    "the Kafka brokers",
    "the ingress controllers",
    "the Redis cluster",
    "the payment API pods",
    "the CDN edge nodes",
    "the etcd members",
    "the search shards",
    "the batch workers",
    "the TLS terminators",
    "the DNS resolvers",
    "the object store gateway",
];
const REGIONS: &[&str] = &[
    "eu-west-1",
    "us-east-1",
    "ap-southeast-2",
    "the Frankfurt zone",
    "us-west-2",
];
const SYMPTOMS: &[&str] = &[
    "p99 latency climbed above two seconds",
    "the error rate on checkout reached 12 percent",
    "replication lag exceeded thirty seconds",
    "consumer lag kept growing on the orders topic",
    "pods were OOMKilled every few minutes",
    "disk usage on the data volume hit 95 percent",
    "certificate validation failed for internal clients",
    "connection pools were exhausted",
    "health checks flapped between healthy and unhealthy",
    "CPU throttling spiked on the ingest nodes",
];
const OBSERVATIONS: &[&str] = &[
    "Dashboards showed no change in request volume, which ruled out a traffic surge",
    "The logs were full of connection reset by peer errors from the upstream proxy",
    "Metrics confirmed that garbage collection pauses lined up with the latency spikes",
    "A recent config change had lowered the connection limit from 500 to 50",
    "The runbook suggested clearing the cache, but that only helped for a few minutes",
    "Tracing pointed at a slow query scanning the whole events table without an index",
    "Nothing in the change calendar matched the start of the incident",
    "Error budgets for the quarter were already nearly spent",
    "After the change, the queue drained and latency returned to baseline within ten minutes",
    "We opened a ticket with the cloud provider, who confirmed a degraded host",
];

fn sentence(rng: &mut Rng) -> String {
    format!(
        "{} {} {} {} in {} because {}. {}.",
        rng.pick(TIMES),
        rng.pick(ACTORS),
        rng.pick(ACTIONS),
        rng.pick(COMPONENTS),
        rng.pick(REGIONS),
        rng.pick(SYMPTOMS),
        rng.pick(OBSERVATIONS),
    )
}

fn text_of_words(rng: &mut Rng, words: usize) -> String {
    let mut out: Vec<String> = Vec::with_capacity(words + 30);
    while out.len() < words {
        out.extend(sentence(rng).split(' ').map(str::to_owned));
    }
    out.truncate(words);
    let mut text = out.join(" ");
    if !text.ends_with('.') {
        text.push('.');
    }
    text
}

/// `n` diagnostic steps of 80 to 120 words (about 100 on average).
pub fn steps(n: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let words = 80 + rng.below(41);
            text_of_words(&mut rng, words)
        })
        .collect()
}

/// `n` search queries of 15 to 25 words (about 20 on average).
pub fn queries(n: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng::new(seed ^ 0x5EED);
    (0..n)
        .map(|_| {
            let words = 15 + rng.below(11);
            text_of_words(&mut rng, words)
        })
        .collect()
}
