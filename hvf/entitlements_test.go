package hvf

import (
	"encoding/xml"
	"os"
	"strings"
	"testing"
)

// entitlements reads the Boolean entitlements of a property list.
func entitlements(t *testing.T, path string) map[string]bool {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var plist struct {
		Dict struct {
			Items []struct {
				XMLName xml.Name
				Text    string `xml:",chardata"`
			} `xml:",any"`
		} `xml:"dict"`
	}
	if err := xml.Unmarshal(data, &plist); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	out := map[string]bool{}
	items := plist.Dict.Items
	for i := 0; i+1 < len(items); i += 2 {
		if items[i].XMLName.Local != "key" {
			t.Fatalf("%s: <%s> where a <key> belongs", path, items[i].XMLName.Local)
		}
		out[strings.TrimSpace(items[i].Text)] = items[i+1].XMLName.Local == "true"
	}
	return out
}

// squibd and the Mac tests are signed with one file, which grants
// Hypervisor.framework and allow-jit: the hardened runtime refuses guest
// code run from a file-backed mapping, as a restored VM's RAM is, without
// it (peers-2026.md §2.3, §6).
func TestEntitlements(t *testing.T) {
	got := entitlements(t, "../entitlements.plist")
	for _, e := range []string{"com.apple.security.hypervisor", "com.apple.security.cs.allow-jit"} {
		if !got[e] {
			t.Errorf("entitlements.plist does not grant %s", e)
		}
	}
	for path, want := range map[string]string{
		"testdata/codesign-exec.sh": `--entitlements "$root/entitlements.plist"`,
		"../Makefile":               "--entitlements entitlements.plist",
	} {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), want) {
			t.Errorf("%s does not sign with %s", path, want)
		}
	}
	if !strings.Contains(signHint("squibd"), "--entitlements entitlements.plist") {
		t.Errorf("the hint %q names another file", signHint("squibd"))
	}
}
