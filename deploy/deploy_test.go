// Package deploy checks what users run: the Dockerfile, docker-compose.yml
// with the Prometheus, Grafana and OpenTelemetry collector configuration it
// mounts from this directory, and the Grafana dashboards in dashboards/.
//
// The compose file is loaded with the Compose specification's own loader,
// the Prometheus configuration is checked with promtool, and every dashboard
// is parsed. That every dashboard query returns data from a real pushrelay is
// tested end to end in e2e/dashboards_test.go.
package deploy

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// root is the repository root, seen from this package's directory.
const root = ".."

// pushrelayPorts are the ports pushrelay listens on by default: push API
// and /metrics, OTLP gRPC, OTLP HTTP, Zipkin.
var pushrelayPorts = []uint32{9091, 4317, 4318, 9411}

// loadCompose loads docker-compose.yml as `docker compose` would, with the
// given profiles and only the given environment.
func loadCompose(t *testing.T, env []string, profiles ...string) *types.Project {
	t.Helper()
	abs, err := filepath.Abs(root)
	require.NoError(t, err)
	opts, err := cli.NewProjectOptions(
		[]string{filepath.Join(abs, "docker-compose.yml")},
		cli.WithWorkingDirectory(abs),
		cli.WithEnv(env),
		cli.WithProfiles(profiles),
		cli.WithResolvedPaths(true),
	)
	require.NoError(t, err)
	project, err := opts.LoadProject(context.Background())
	require.NoError(t, err, "docker-compose.yml does not load")
	return project
}

func serviceNames(s types.Services) []string {
	var names []string
	for name := range s {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

func TestComposeServices(t *testing.T) {
	project := loadCompose(t, nil)
	require.Equal(t, "pushrelay", project.Name)
	require.Equal(t, []string{"grafana", "prometheus", "pushrelay"}, serviceNames(project.Services),
		"services without a profile")
	require.Equal(t, []string{"otel-collector"}, serviceNames(project.DisabledServices),
		"services only in a profile")

	pr := project.Services["pushrelay"]
	require.NotNil(t, pr.Build, "pushrelay is built from the Dockerfile")
	abs, err := filepath.Abs(root)
	require.NoError(t, err)
	require.Equal(t, abs, pr.Build.Context)
	require.Equal(t, "Dockerfile", pr.Build.Dockerfile)
	require.FileExists(t, filepath.Join(abs, pr.Build.Dockerfile))

	var published []uint32
	for _, p := range pr.Ports {
		require.Equal(t, "tcp", p.Protocol)
		published = append(published, p.Target)
		require.Equal(t, strconv.FormatUint(uint64(p.Target), 10), p.Published, "port %d is published on the same host port", p.Target)
	}
	require.ElementsMatch(t, pushrelayPorts, published)

	require.Len(t, pr.Volumes, 1)
	require.Equal(t, types.VolumeTypeVolume, pr.Volumes[0].Type)
	require.Equal(t, "/data", pr.Volumes[0].Target)
	require.Contains(t, project.Volumes, pr.Volumes[0].Source, "the pushrelay volume is a named volume")

	cmd := []string(pr.Command)
	require.Contains(t, cmd, "--persistence.file=/data/pushrelay.db", "the command replaces the image's CMD: it must keep the file in the volume")
	require.Contains(t, cmd, "--web.enable-lifecycle")
	require.Contains(t, cmd, "--forward.otlp.endpoint=", "forwarding is off without the otel profile")

	prom := project.Services["prometheus"]
	require.True(t, strings.HasPrefix(prom.Image, "prom/prometheus"), prom.Image)
	requireBind(t, prom, "deploy/prometheus/prometheus.yml", "/etc/prometheus/prometheus.yml")
	require.Contains(t, []string(prom.Command), "--config.file=/etc/prometheus/prometheus.yml")

	graf := project.Services["grafana"]
	require.True(t, strings.HasPrefix(graf.Image, "grafana/grafana"), graf.Image)
	requireBind(t, graf, "deploy/grafana/provisioning/datasources/prometheus.yml", "/etc/grafana/provisioning/datasources/prometheus.yml")
	requireBind(t, graf, "deploy/grafana/provisioning/dashboards/pushrelay.yml", "/etc/grafana/provisioning/dashboards/pushrelay.yml")
	requireBind(t, graf, "dashboards", "/var/lib/grafana/dashboards")
	home := graf.Environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
	require.NotNil(t, home)
	rel, ok := strings.CutPrefix(*home, "/var/lib/grafana/dashboards/")
	require.True(t, ok, *home)
	require.FileExists(t, filepath.Join(root, "dashboards", rel))
}

// requireBind requires a read-only bind mount of the repository path src at
// target in s.
func requireBind(t *testing.T, s types.ServiceConfig, src, target string) {
	t.Helper()
	abs, err := filepath.Abs(filepath.Join(root, src))
	require.NoError(t, err)
	for _, v := range s.Volumes {
		if v.Target == target {
			require.Equal(t, types.VolumeTypeBind, v.Type, "%s of %s", target, s.Name)
			require.Equal(t, abs, v.Source, "%s of %s", target, s.Name)
			require.True(t, v.ReadOnly, "%s of %s is mounted read-only", target, s.Name)
			return
		}
	}
	t.Fatalf("service %s mounts nothing at %s", s.Name, target)
}

// TestComposeBindMountsExist loads every profile and requires that every
// bind-mounted file or directory exists in the repository.
func TestComposeBindMountsExist(t *testing.T) {
	project := loadCompose(t, nil, "*")
	require.Contains(t, project.Services, "otel-collector")
	n := 0
	for _, name := range serviceNames(project.Services) {
		for _, v := range project.Services[name].Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			n++
			_, err := os.Stat(v.Source)
			require.NoError(t, err, "service %s bind-mounts %s at %s", name, v.Source, v.Target)
		}
	}
	require.GreaterOrEqual(t, n, 5)
}

// TestComposeOtelProfile checks the profile that forwards to a collector.
func TestComposeOtelProfile(t *testing.T) {
	project := loadCompose(t, []string{"PUSHRELAY_FORWARD_ENDPOINT=otel-collector:4317"}, "otel")
	require.Equal(t, []string{"grafana", "otel-collector", "prometheus", "pushrelay"}, serviceNames(project.Services))
	col := project.Services["otel-collector"]
	require.Equal(t, []string{"otel"}, col.Profiles)
	require.True(t, strings.HasPrefix(col.Image, "otel/opentelemetry-collector-contrib"), col.Image)
	requireBind(t, col, "deploy/otel-collector/config.yaml", "/etc/otelcol-contrib/config.yaml")
	for _, p := range col.Ports {
		require.NotContains(t, pushrelayPorts, p.Target, "the collector's ports must not clash with pushrelay's on the host")
	}

	cmd := []string(project.Services["pushrelay"].Command)
	require.Contains(t, cmd, "--forward.otlp.endpoint=otel-collector:4317")
	require.Contains(t, cmd, "--forward.otlp.insecure", "the collector's receiver is plaintext")

	// The collector receives OTLP gRPC on the port pushrelay forwards to
	// and sends metrics to the debug and the Prometheus exporters.
	b, err := os.ReadFile(filepath.Join(root, "deploy/otel-collector/config.yaml"))
	require.NoError(t, err)
	var cfg struct {
		Receivers struct {
			OTLP struct {
				Protocols struct {
					GRPC struct {
						Endpoint string `yaml:"endpoint"`
					} `yaml:"grpc"`
				} `yaml:"protocols"`
			} `yaml:"otlp"`
		} `yaml:"receivers"`
		Exporters map[string]any `yaml:"exporters"`
		Service   struct {
			Pipelines map[string]struct {
				Receivers []string `yaml:"receivers"`
				Exporters []string `yaml:"exporters"`
			} `yaml:"pipelines"`
		} `yaml:"service"`
	}
	require.NoError(t, yaml.Unmarshal(b, &cfg))
	require.Equal(t, "0.0.0.0:4317", cfg.Receivers.OTLP.Protocols.GRPC.Endpoint)
	require.Contains(t, cfg.Exporters, "debug")
	require.Contains(t, cfg.Exporters, "prometheus")
	metrics, ok := cfg.Service.Pipelines["metrics"]
	require.True(t, ok, "no metrics pipeline")
	require.Equal(t, []string{"otlp"}, metrics.Receivers)
	require.ElementsMatch(t, []string{"debug", "prometheus"}, metrics.Exporters)
}

// TestPrometheusConfig checks the mounted configuration with promtool and
// that it scrapes pushrelay as the README says.
func TestPrometheusConfig(t *testing.T) {
	path := filepath.Join(root, "deploy/prometheus/prometheus.yml")
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var cfg struct {
		ScrapeConfigs []struct {
			JobName        string `yaml:"job_name"`
			HonorLabels    bool   `yaml:"honor_labels"`
			ScrapeInterval string `yaml:"scrape_interval"`
			StaticConfigs  []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	require.NoError(t, yaml.Unmarshal(b, &cfg))
	found := false
	for _, sc := range cfg.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			if slices.Contains(st.Targets, "pushrelay:9091") {
				found = true
				require.True(t, sc.HonorLabels, "job %s must keep the pushed job and instance labels", sc.JobName)
				require.Equal(t, "15s", sc.ScrapeInterval)
			}
		}
	}
	require.True(t, found, "no scrape config targets pushrelay:9091")

	promtool, err := exec.LookPath("promtool")
	if err != nil {
		msg := "promtool (Debian package prometheus) is not installed; run make deps"
		if os.Getenv("PUSHRELAY_E2E") == "1" || os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	out, err := exec.Command(promtool, "check", "config", path).CombinedOutput()
	require.NoError(t, err, "promtool check config %s:\n%s", path, out)
	require.Contains(t, string(out), "SUCCESS")
}

// TestDockerfile checks the Dockerfile, which cannot be built here, for
// what the image must have.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	require.NoError(t, err)
	df := string(b)
	for _, want := range []string{
		"CGO_ENABLED=0",
		"-X github.com/prometheus/common/version.Version=",
		"-X github.com/prometheus/common/version.Revision=",
		"-X github.com/prometheus/common/version.Branch=",
		"./cmd/pushrelay",
		"\nVOLUME /data\n",
		"\nEXPOSE 9091 4317 4318 9411\n",
		"/-/healthy",
		`CMD ["--persistence.file=/data/pushrelay.db"]`,
	} {
		require.Contains(t, df, want)
	}
	require.Regexp(t, `(?m)^USER [1-9][0-9]*(:[1-9][0-9]*)?$`, df, "the image runs as a non-root user")
	require.Regexp(t, `(?m)^HEALTHCHECK `, df)
	require.Equal(t, 2, len(regexp.MustCompile(`(?m)^FROM `).FindAllString(df, -1)), "a builder and a runtime stage")

	// The builder's Go is the go.mod's: a newer go directive than the image
	// has would need a toolchain download during the build.
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	require.NoError(t, err)
	goLine := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(mod)
	require.NotNil(t, goLine)
	goArg := regexp.MustCompile(`(?m)^ARG GO_VERSION=(\S+)$`).FindStringSubmatch(df)
	require.NotNil(t, goArg, "the Dockerfile names its Go version in ARG GO_VERSION")
	require.Equal(t, string(goLine[1]), goArg[1])

	// Every ldflags variable exists in the Makefile's list too.
	mk, err := os.ReadFile(filepath.Join(root, "Makefile"))
	require.NoError(t, err)
	for _, m := range regexp.MustCompile(`-X (github\.com/prometheus/common/version\.\w+)=`).FindAllStringSubmatch(df, -1) {
		require.Contains(t, string(mk), "-X "+m[1]+"=")
	}
}

// dashboard is the part of a Grafana dashboard the tests look at.
type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Datasource json.RawMessage `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int             `json:"id"`
	Type       string          `json:"type"`
	Title      string          `json:"title"`
	Datasource json.RawMessage `json:"datasource"`
	Targets    []struct {
		RefID      string          `json:"refId"`
		Expr       string          `json:"expr"`
		Datasource json.RawMessage `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

// flatPanels returns the panels of d, those inside rows included, without
// the rows.
func flatPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		if p.Type == "row" {
			out = append(out, flatPanels(p.Panels)...)
			continue
		}
		out = append(out, p)
	}
	return out
}

// dashboardFiles are the dashboards the issue asks for.
var dashboardFiles = []string{
	"pushrelay-jobs.json",
	"pushrelay-spanmetrics.json",
	"pushrelay-service-graph.json",
	"pushrelay-self.json",
}

// builtinVariables are Grafana's global variables a query may use.
var builtinVariables = map[string]bool{
	"__rate_interval": true, "__interval": true, "__interval_ms": true,
	"__range": true, "__range_s": true, "__range_ms": true,
}

// variableRef matches $name, ${name}, ${name:format} and [[name]]; $1 in
// label_replace replacements is not a variable.
var variableRef = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\$([A-Za-z_]\w*)|\[\[(\w+)\]\]`)

func TestDashboards(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(root, "dashboards", "*.json"))
	require.NoError(t, err)
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f))
	}
	require.ElementsMatch(t, dashboardFiles, names)

	uids := map[string]string{}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			require.NoError(t, err)
			var d dashboard
			require.NoError(t, json.Unmarshal(b, &d))
			require.NotEmpty(t, d.UID)
			require.NotEmpty(t, d.Title)
			require.NotContains(t, uids, d.UID, "uid used twice")
			uids[d.UID] = f
			require.GreaterOrEqual(t, d.SchemaVersion, 39)

			// No datasource anywhere names a uid other than the variable's.
			requireNoLiteralUID(t, b)

			vars := map[string]bool{}
			hasDatasource := false
			for _, v := range d.Templating.List {
				vars[v.Name] = true
				if v.Type == "datasource" {
					var q string
					require.NoError(t, json.Unmarshal(v.Query, &q))
					if v.Name == "datasource" && q == "prometheus" {
						hasDatasource = true
					}
					continue
				}
				requireVariableDatasource(t, v.Datasource, "variable "+v.Name)
			}
			require.True(t, hasDatasource, "no datasource variable of type prometheus")

			panels := flatPanels(d.Panels)
			require.NotEmpty(t, panels)
			ids := map[int]bool{}
			for _, p := range panels {
				require.NotZero(t, p.ID, "panel %q has no id", p.Title)
				require.False(t, ids[p.ID], "panel id %d used twice", p.ID)
				ids[p.ID] = true
				requireVariableDatasource(t, p.Datasource, "panel "+p.Title)
				exprs := 0
				refs := map[string]bool{}
				for _, tg := range p.Targets {
					require.NotEmpty(t, tg.RefID, "panel %q", p.Title)
					require.False(t, refs[tg.RefID], "panel %q: refId %s twice", p.Title, tg.RefID)
					refs[tg.RefID] = true
					if strings.TrimSpace(tg.Expr) != "" {
						exprs++
					}
					if len(tg.Datasource) > 0 {
						requireVariableDatasource(t, tg.Datasource, "target of panel "+p.Title)
					}
					for _, m := range variableRef.FindAllStringSubmatch(tg.Expr, -1) {
						name := m[1] + m[2] + m[3]
						require.True(t, vars[name] || builtinVariables[name], "panel %q uses undefined variable $%s", p.Title, name)
					}
					// A multi-value variable is a regular expression: it
					// must be matched with =~.
					require.NotRegexp(t, `[^=~]="\$`, tg.Expr, "panel %q compares a variable with =", p.Title)
				}
				require.Positive(t, exprs, "panel %q has no target with an expr", p.Title)
			}
		})
	}
}

// requireVariableDatasource requires raw to select the datasource through
// the ${datasource} variable.
func requireVariableDatasource(t *testing.T, raw json.RawMessage, what string) {
	t.Helper()
	require.NotEmpty(t, raw, "%s has no datasource", what)
	var ds struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	}
	require.NoError(t, json.Unmarshal(raw, &ds), "%s: datasource %s", what, raw)
	require.Equal(t, "prometheus", ds.Type, what)
	require.Equal(t, "${datasource}", ds.UID, what)
}

// requireNoLiteralUID walks the whole dashboard: every datasource object's
// uid is a variable.
func requireNoLiteralUID(t *testing.T, b []byte) {
	t.Helper()
	var doc any
	require.NoError(t, json.Unmarshal(b, &doc))
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, c := range v {
				if k == "datasource" {
					if ds, ok := c.(map[string]any); ok {
						if uid, ok := ds["uid"].(string); ok {
							require.True(t, strings.HasPrefix(uid, "$"), "%s.datasource has the literal uid %q", path, uid)
						}
					}
					if s, ok := c.(string); ok {
						require.True(t, strings.HasPrefix(s, "$"), "%s.datasource is the literal %q", path, s)
					}
				}
				walk(path+"."+k, c)
			}
		case []any:
			for i, c := range v {
				walk(path+"["+strconv.Itoa(i)+"]", c)
			}
		}
	}
	walk("", doc)
}
