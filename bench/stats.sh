# shellcheck shell=bash
# bench/stats.sh: the statistics of the pairs, sourced by bench/run and
# bench/pairs. A pairs file has a line per pair: "pair first fulcrum_rps
# fulcrum-p_rps fulcrum_cpu fulcrum-p_cpu errors" (bench/run's pairs.txt).

# median_ci: the median of the numbers on stdin and a distribution-free
# interval for it: [x(k), x(n-k+1)] of the sorted numbers, with k the
# largest for which P(Binomial(n, 1/2) <= k-1) <= 5%, so the interval holds
# the true median with probability 1 - 2 P(...) >= 90%. Prints
# "median low high coverage%", low and high "nan" below 5 numbers.
median_ci() {
	sort -g | awk '{ v[NR] = $1 } END {
		n = NR
		if (n == 0) { print "nan nan nan 0"; exit }
		med = n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
		p = 0.5 ^ n; c = p; k = 0; tail = 0 # p = P(X = j), c = P(X <= j)
		for (j = 0; j < n / 2 && c <= 0.05; j++) { k = j + 1; tail = c; p = p * (n - j) / (j + 1); c += p }
		if (k == 0) { printf "%.3f nan nan 0\n", med; exit }
		printf "%.3f %.3f %.3f %.0f\n", med, v[k], v[n - k + 1], (1 - 2 * tail) * 100
	}'
}

# pairs_summary FILE...: prints the median fulcrum-p/fulcrum ratios of req/s
# and cpu/req over the pairs in the files, each with its interval, and sets
# PAIR_RPS and PAIR_CPU to "median low high coverage%" (see median_ci).
pairs_summary() {
	PAIR_RPS=$(awk '$3 > 0 { print $4 / $3 }' "$@" | median_ci)
	# shellcheck disable=SC2034 # read below through ${!v}, and by callers
	PAIR_CPU=$(awk '$5 > 0 { print $6 / $5 }' "$@" | median_ci)
	local v m lo hi cov name
	for v in PAIR_RPS PAIR_CPU; do
		read -r m lo hi cov <<<"${!v}"
		name=req/s
		if [[ $v == PAIR_CPU ]]; then name=cpu/req; fi
		if [[ $lo == nan ]]; then
			printf '    median %s %s (too few pairs for an interval)\n' "$name" "$m"
		else
			printf '    median %s %s, %s%% interval for it %s..%s\n' "$name" "$m" "$cov" "$lo" "$hi"
		fi
	done
}

# pairs_verdict TARGET: issue 6's verdict on PAIR_RPS (after pairs_summary):
# send_proxy costs at most 1-TARGET of req/s.
pairs_verdict() {
	awk -v t="$1" -v pr="$PAIR_RPS" 'BEGIN {
		split(pr, q, " ")
		ok = q[1] != "nan" && q[1] + 0 >= t
		printf "  target (issue 6): send_proxy v2 costs <= %g%% of req/s: median req/s ratio of the pairs %s >= %s: %s\n", (1 - t) * 100, q[1], t, (ok ? "MET" : "NOT MET")
		if (q[2] != "nan")
			printf "    the pairs %s it: their %s%% interval %s..%s lies %s\n", (q[2] + 0 >= t || q[3] + 0 < t ? "resolve" : "do not resolve"), q[4], q[2], q[3],
				(q[2] + 0 >= t ? "wholly at or above " t : (q[3] + 0 < t ? "wholly below " t : "on both sides of " t " (more pairs, or pool runs with bench/pairs)"))
	}'
}
