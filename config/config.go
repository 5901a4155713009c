// Package config loads pushrelay's YAML configuration file (--config.file).
//
// The file has one section per feature; every section is optional:
//
//	staleness:
//	  rules:
//	    - match: {job: "wm_.*"}
//	      ttl: 10m
//	      action: zero
//	    - match: {job: "backup"}
//	      ttl: 0
//	spanmetrics:
//	  dimensions: [workspace_id, language, tag, job_kind]
//	auth:
//	  push: {basic_auth_users: {ci: "$2y$10$..."}}
//	  scrape: {basic_auth_users: {prometheus: "$2y$10$..."}}
//
// Unknown fields and invalid values are errors that name their line.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/bcrypt"

	"github.com/pushrelay/pushrelay/spanmetrics"
	"github.com/pushrelay/pushrelay/staleness"
)

// Config is the content of the configuration file.
type Config struct {
	// Staleness holds the TTL rules for push groups.
	Staleness staleness.Config `yaml:"staleness"`
	// Spanmetrics configures span metrics and service graphs; unset
	// fields keep Tempo's defaults.
	Spanmetrics spanmetrics.Config `yaml:"spanmetrics"`
	// Auth sets separate basic-auth users for pushing, reading and
	// administration.
	Auth Auth `yaml:"auth"`
}

// Auth holds basic-auth users, name to bcrypt hash, per access class.
type Auth struct {
	Push   Users `yaml:"push"`
	Scrape Users `yaml:"scrape"`
	Admin  Users `yaml:"admin"`
}

// Users is one access class's users.
type Users struct {
	BasicAuthUsers map[string]string `yaml:"basic_auth_users"`
}

// validate checks that every password is a bcrypt hash.
func (a *Auth) validate() error {
	for class, u := range map[string]Users{"push": a.Push, "scrape": a.Scrape, "admin": a.Admin} {
		for user, hash := range u.BasicAuthUsers {
			if _, err := bcrypt.Cost([]byte(hash)); err != nil {
				return fmt.Errorf("auth.%s user %q: the password must be a bcrypt hash (htpasswd -nBC 10 %s): %w", class, user, user, err)
			}
		}
	}
	return nil
}

// Load reads and validates the file at path.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read config file %q: %w", path, err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("invalid config file %q: %w", path, err)
	}
	return c, nil
}

// Parse decodes and validates a configuration. An empty document is a valid
// configuration with every default.
func Parse(b []byte) (*Config, error) {
	c := &Config{Spanmetrics: spanmetrics.DefaultConfig()}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if err := c.Auth.validate(); err != nil {
		return nil, err
	}
	// Validate a copy: defaults that depend on flags are filled later.
	check := c.Spanmetrics
	if err := check.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}
