package main

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Targets from the issue.
const (
	targetVsUnchecked = 1.5  // pushrelay / unchecked Pushgateway pushes/s at 1k groups
	targetScaling     = 0.8  // pushrelay pushes/s at 10k / at 1k groups
	targetUSPerSample = 0.25 // µs per exposed sample per scrape
)

func printReport(w io.Writer, r *results) {
	fmt.Fprintf(w, "\n# pushrelay-bench, %s, %d clients, %d samples per push\n", r.Started.Format("2006-01-02 15:04:05"), r.Clients, r.Samples)
	if len(r.Commands) > 0 {
		fmt.Fprintln(w, "\n## Commands")
		for _, c := range r.Commands {
			fmt.Fprintln(w, "  "+c)
		}
	}

	if d := r.DiskSync; d != nil {
		fmt.Fprintf(w, "\n## Disk\n  fsync after a 16 KiB write in the work directory, before the push phases: p50 %.2f ms, p90 %.2f ms (%d syncs); a bbolt commit syncs twice\n", d.P50ms, d.P90ms, d.Syncs)
	}

	if len(r.Fills) > 0 {
		fmt.Fprintln(w, "\n## Fill (each new group pushed once)")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "target\tgroups\tok\tseconds\tpushes/s\terrors\t")
		for _, f := range r.Fills {
			fmt.Fprintf(tw, "%s\t%d→%d\t%d\t%.1f\t%.0f\t%s\t\n", f.Target, f.From, f.To, f.Done, f.Seconds, f.Rate, f.Errors)
		}
		tw.Flush()
	}

	if len(r.Pushes) > 0 {
		fmt.Fprintln(w, "\n## Push phases (PUT to random groups)")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "target\tgroups\tseconds\tok\tpushes/s\tp50 ms\tp90 ms\tp99 ms\tmax ms\tsrv CPU%\tsrv µs/push\tclient CPU%\tother CPU%\tsteal CPU%\terrors\tpushes/s per round\t")
		noisy, unsettled := false, false
		for _, p := range r.Pushes {
			fmt.Fprintf(tw, "%s\t%d\t%.1f\t%d\t%.0f\t%.2f\t%.2f\t%.2f\t%.1f\t%s\t%s\t%.0f\t%.0f\t%.0f\t%s\t%s\t\n",
				p.Target, p.Groups, p.Seconds, p.OK, p.Rate, p.P50ms, p.P90ms, p.P99ms, p.MaxMs,
				orDash(p.ServerCPUPct, "%.0f"), orDash(p.ServerCPUus, "%.0f"), p.ClientCPUPct, p.OtherCPUPct, p.StealCPUPct, p.Errors, joinRates(p.RoundRates, 0))
			noisy = noisy || p.OtherCPUPct > 20
			unsettled = unsettled || p.Unsettled
		}
		tw.Flush()
		if noisy {
			fmt.Fprintln(w, "  WARNING: other processes used more than 20% of a core during some phases; their numbers are not trustworthy.")
		}
		if unsettled {
			fmt.Fprintf(w, "  WARNING: some rounds started on a busy machine: over each %s of the %s before them, at least %.0f%% of a core was in use.\n", settleWindow, settleLimit, 100*settleQuietShare)
		}
		for _, p := range r.Pushes {
			if p.Batches > 0 {
				fmt.Fprintf(w, "  %s @%d group commit: %.0f batches, mean %.1f writes/batch, mean batch %.2f ms (commit %.2f ms)\n",
					p.Target, p.Groups, p.Batches, p.MeanBatch, p.MeanWriteMs, p.MeanCommitMs)
			}
		}
		for _, p := range r.Pushes {
			for k, msg := range p.Errors.First {
				fmt.Fprintf(w, "  %s @%d first %s: %s\n", p.Target, p.Groups, k, msg)
			}
		}
	}

	if len(r.Scrapes) > 0 {
		fmt.Fprintln(w, "\n## Scrapes of /metrics (prometheus+gzip: Prometheus' Accept header, Accept-Encoding: gzip; text+gzip: Accept text/plain 0.0.4, gzip; text: text/plain 0.0.4, identity)")
		fmt.Fprintln(w, "   The first scrape of a level follows a push phase or fill that replaced the groups (what Prometheus sees when groups are pushed between scrapes); later ones may hit per-series caches. pushrelay's \"first\" is the median of --scrape-firsts such scrapes: the first after the push phase or fill, each other after every group was pushed again. Every server was scraped once in each compressed mode after its first fill, as a scraper does from its start, so that first scrapes do not count what a process builds once.")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "target\tgroups\tmode\tn\tfirst s\tmedian s\twire MB\traw MB\tsamples\tfirst µs/sample\tmedian µs/sample\tpeak RSS MB\tRSS after MB\tcontent type\t")
		for _, s := range r.Scrapes {
			if s.Err != "" {
				fmt.Fprintf(tw, "%s\t%d\t%s\terror: %s\t\t\t\t\t\t\t\t\t\t\n", s.Target, s.Groups, s.Mode, s.Err)
				continue
			}
			peak := orDash(float64(s.PeakRSS)/(1<<20), "%.0f")
			if s.PeakRSS > 0 && !s.PeakReset {
				peak += "*"
			}
			ct := s.ContentType
			if i := strings.Index(ct, ";"); i >= 0 {
				ct = ct[:i]
			}
			if s.ContentEncoding != "" {
				ct += "+" + s.ContentEncoding
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%.3f\t%.3f\t%.1f\t%.1f\t%d\t%.3f\t%.3f\t%s\t%s\t%s\t\n",
				s.Target, s.Groups, s.Mode, s.Scrapes, s.FirstSeconds, s.MedianSeconds,
				float64(s.WireBytes)/1e6, float64(s.RawBytes)/1e6, s.Samples, s.FirstUSPerSample, s.USPerSample,
				peak, orDash(float64(s.RSSAfter)/(1<<20), "%.0f"), ct)
		}
		tw.Flush()
		for _, s := range r.Scrapes {
			if s.PeakRSS > 0 && !s.PeakReset {
				fmt.Fprintln(w, "  (* peak RSS of the process's life: VmHWM could not be reset)")
				break
			}
		}
	}

	printRatios(w, r)

	if len(r.Profiles) > 0 {
		fmt.Fprintln(w, "\n## CPU profiles (go tool pprof -top <file>)")
		for _, p := range r.Profiles {
			fmt.Fprintln(w, "  "+p)
		}
	}
	if len(r.Notes) > 0 {
		fmt.Fprintln(w, "\n## Notes")
		for _, n := range r.Notes {
			fmt.Fprintln(w, "  "+n)
		}
	}
}

func printRatios(w io.Writer, r *results) {
	phase := func(target string, groups int) (pushResult, bool) {
		for _, p := range r.Pushes {
			if p.Target == target && p.Groups == groups && p.OK > 0 {
				return p, true
			}
		}
		return pushResult{}, false
	}
	rate := func(target string, groups int) (float64, bool) {
		p, ok := phase(target, groups)
		return p.Rate, ok
	}
	// perRound gives the ratios of a to b round by round, when both ran
	// the same number of rounds.
	perRound := func(a, b pushResult) string {
		if len(a.RoundRates) < 2 || len(a.RoundRates) != len(b.RoundRates) {
			return ""
		}
		ratios := make([]float64, len(a.RoundRates))
		for i := range ratios {
			if b.RoundRates[i] == 0 {
				return ""
			}
			ratios[i] = a.RoundRates[i] / b.RoundRates[i]
		}
		return "; per round " + joinRates(ratios, 2) + "×"
	}
	fmt.Fprintln(w, "\n## Ratios and targets")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "measure\tvalue\ttarget\tmet\t")
	verdict := func(ok bool) string {
		if ok {
			return "yes"
		}
		return "NO"
	}
	p1, ok1 := phase("pushrelay", 1000)
	pr1 := p1.Rate
	pu, oku := phase("pushgateway-unchecked", 1000)
	pu1 := pu.Rate
	if ok1 && oku {
		v := pr1 / pu1
		fmt.Fprintf(tw, "pushrelay / pushgateway-unchecked pushes/s @1k groups\t%.2f× (%.0f / %.0f%s)\t≥ %.1f×\t%s\t\n", v, pr1, pu1, perRound(p1, pu), targetVsUnchecked, verdict(v >= targetVsUnchecked))
	}
	if p10, ok := phase("pushrelay", 10000); ok && ok1 {
		v := p10.Rate / pr1
		fmt.Fprintf(tw, "pushrelay pushes/s @10k / @1k groups\t%.2f× (%.0f / %.0f%s)\t≥ %.1f×\t%s\t\n", v, p10.Rate, pr1, perRound(p10, p1), targetScaling, verdict(v >= targetScaling))
	}
	for _, groups := range []int{1000, 10000} {
		a, okA := phase("pushrelay", groups)
		b, okB := phase("pushrelay-b", groups)
		if okA && okB {
			fmt.Fprintf(tw, "pushrelay-b / pushrelay pushes/s @%d groups\t%.2f× (%.0f / %.0f%s)\t\t\t\n", groups, b.Rate/a.Rate, b.Rate, a.Rate, perRound(b, a))
		}
	}
	if pm, ok := phase("pushrelay-memory", 1000); ok {
		if oku {
			fmt.Fprintf(tw, "pushrelay-memory (not durable) / pushgateway-unchecked pushes/s @1k groups\t%.2f× (%.0f / %.0f%s)\t\t\t\n", pm.Rate/pu1, pm.Rate, pu1, perRound(pm, pu))
		}
		if ok1 {
			fmt.Fprintf(tw, "pushrelay / pushrelay-memory pushes/s @1k groups\t%.2f× (%.0f / %.0f%s)\t\t\t\n", pr1/pm.Rate, pr1, pm.Rate, perRound(p1, pm))
		}
	}
	if pc1, ok := rate("pushgateway-checked", 1000); ok && ok1 {
		fmt.Fprintf(tw, "pushrelay / pushgateway-checked pushes/s @1k groups\t%.0f× (%.0f / %.1f)\t\t\t\n", pr1/pc1, pr1, pc1)
	}
	if pu10, ok := rate("pushgateway-unchecked", 10000); ok && oku {
		fmt.Fprintf(tw, "pushgateway-unchecked pushes/s @10k / @1k groups\t%.2f×\t\t\t\n", pu10/pu1)
	}
	if pn, ok := rate("null", 1000); ok && ok1 {
		fmt.Fprintf(tw, "pushrelay / do-nothing server pushes/s @1k groups\t%.2f× (%.0f / %.0f)\t\t\t\n", pr1/pn, pr1, pn)
	}
	for _, s := range r.Scrapes {
		if s.Target != "pushrelay" || s.Err != "" {
			continue
		}
		fmt.Fprintf(tw, "pushrelay scrape %s @%d groups, µs/sample after every group changed%s\t%.3f\t≤ %.2f\t%s\t\n", s.Mode, s.Groups, firstsSpread(s), s.FirstUSPerSample, targetUSPerSample, verdict(s.FirstUSPerSample <= targetUSPerSample))
		fmt.Fprintf(tw, "pushrelay scrape %s @%d groups, µs/sample median of %d\t%.3f\t≤ %.2f\t%s\t\n", s.Mode, s.Groups, s.Scrapes, s.USPerSample, targetUSPerSample, verdict(s.USPerSample <= targetUSPerSample))
		for _, o := range r.Scrapes {
			if o.Target == "pushgateway-unchecked" && o.Groups == s.Groups && o.Mode == s.Mode && o.Err == "" && s.MedianSeconds > 0 {
				mem := ""
				if s.PeakRSS > 0 && o.PeakRSS > 0 {
					mem = fmt.Sprintf("; peak RSS pushrelay %.0f MB, pushgateway %.0f MB", float64(s.PeakRSS)/(1<<20), float64(o.PeakRSS)/(1<<20))
				}
				fmt.Fprintf(tw, "  pushgateway / pushrelay scrape time %s @%d\tfirst %.1f×, median %.1f×%s\t\t\t\n", s.Mode, s.Groups, o.FirstSeconds/s.FirstSeconds, o.MedianSeconds/s.MedianSeconds, mem)
			}
		}
	}
	tw.Flush()
}

// firstsSpread describes s's scrapes after every group changed when there
// were several: how many, and the range of their µs per sample.
func firstsSpread(s scrapeResult) string {
	if len(s.FirstsSeconds) < 2 || s.Samples == 0 {
		return ""
	}
	perSample := 1e6 / float64(s.Samples)
	return fmt.Sprintf(", median of %d (%.3f–%.3f)", len(s.FirstsSeconds), slices.Min(s.FirstsSeconds)*perSample, slices.Max(s.FirstsSeconds)*perSample)
}

// joinRates formats values with decimals digits after the point,
// separated by commas.
func joinRates(vs []float64, decimals int) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = strconv.FormatFloat(v, 'f', decimals, 64)
	}
	return strings.Join(parts, ", ")
}

func orDash(v float64, format string) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf(format, v)
}
