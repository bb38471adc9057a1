// libdnf5 plugin "sticky-vendor": keeps dnf5's generated vendor rules current.
//
// dnf5 enforces the sticky-vendor policy itself, from the vendors.d rule
// files `rpmcow vendor` generates (rpmcow/vendorpolicy/dnf5.py); the
// commands regenerate them when they change the policy.  An admin who edits
// a policy file by hand changes it too: before dnf5 reads vendors.d (in
// Base::setup, right after this hook), this plugin compares the rule file's
// time with the policy files' and, only if one is newer, runs rpmcow's
// `refresh` step (rpmcow/vendor_dnf5.py), which regenerates the rules -- or,
// for an invalid policy, keeps the last good ones and says why.  Nothing else:
// a stat of a few files per dnf5 run.  Never fails dnf5.
#include <libdnf5/base/base.hpp>
#include <libdnf5/conf/config_parser.hpp>
#include <libdnf5/plugin/iplugin.hpp>

#include <dirent.h>
#include <sys/stat.h>

#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "step.hpp"

namespace {

constexpr const char * NAME = "sticky-vendor";
constexpr libdnf5::PluginAPIVersion API{.major = 2, .minor = 1};
constexpr libdnf5::plugin::Version VERSION{0, 1, 0};
const char * const ATTRS[]{"author.name", "description", nullptr};
const char * const ATTR_VALUES[]{"rpmcow", "Keeps the sticky-vendor rules current (rpmcow).",
                                 nullptr};
constexpr const char * RULES = "/etc/dnf/vendors.d/50-rpmcow-sticky-vendor.conf";
constexpr const char * OURS = "50-rpmcow-sticky-vendor";

std::exception_ptr last_exception;

bool newer(const struct timespec & a, const struct timespec & b) {
    return a.tv_sec != b.tv_sec ? a.tv_sec > b.tv_sec : a.tv_nsec > b.tv_nsec;
}

// is `path`, or a *.conf in directory `path` (ours excepted), newer than t?
bool any_newer(const std::string & path, const struct timespec & t) {
    struct stat st;
    if (stat(path.c_str(), &st) < 0)
        return false;
    if (!S_ISDIR(st.st_mode))
        return newer(st.st_mtim, t);
    if (newer(st.st_mtim, t))          // a file added or removed
        return true;
    DIR * d = opendir(path.c_str());
    if (d == nullptr)
        return false;
    bool found = false;
    while (struct dirent * e = readdir(d)) {
        size_t n = std::strlen(e->d_name);
        if (n < 5 || std::strcmp(e->d_name + n - 5, ".conf") != 0 ||
            std::strncmp(e->d_name, OURS, std::strlen(OURS)) == 0)
            continue;
        if (stat((path + "/" + e->d_name).c_str(), &st) == 0 && newer(st.st_mtim, t)) {
            found = true;
            break;
        }
    }
    closedir(d);
    return found;
}

class StickyVendor final : public libdnf5::plugin::IPlugin2_1 {
public:
    StickyVendor(libdnf5::plugin::IPluginData & data, libdnf5::ConfigParser & parser)
        : IPlugin2_1(data) {
        auto get = [&](const char * key, const char * dflt) {
            return parser.has_option("main", key) ? parser.get_value("main", key) : std::string(dflt);
        };
        python = get("python", "/usr/bin/python3");
        path = get("path", "");
        vendor_conf = get("vendor_conf", "/etc/dnf/plugins/sticky-vendor.conf");
    }

    libdnf5::PluginAPIVersion get_api_version() const noexcept override { return API; }
    const char * get_name() const noexcept override { return NAME; }
    libdnf5::plugin::Version get_version() const noexcept override { return VERSION; }
    const char * const * get_attributes() const noexcept override { return ATTRS; }
    const char * get_attribute(const char * name) const noexcept override {
        for (size_t i = 0; ATTRS[i]; ++i)
            if (std::strcmp(name, ATTRS[i]) == 0)
                return ATTR_VALUES[i];
        return nullptr;
    }

    void pre_base_setup() override {
        try {
            std::string root = get_base().get_config().get_installroot_option().get_value();
            if (!root.empty() && root.back() == '/')
                root.pop_back();
            struct stat rules;
            if (stat((root + RULES).c_str(), &rules) < 0)
                return;                  // not enabled here (or never generated)
            const std::string inputs[] = {vendor_conf, root + "/etc/dnf/sticky-vendor.d",
                                          root + "/etc/dnf/vendors.d",
                                          root + "/usr/share/dnf5/vendors.d",
                                          root + "/var/lib/dnf/sticky-vendor"};
            bool stale = false;
            for (const auto & p : inputs)
                stale = stale || any_newer(p, rules.st_mtim);
            if (!stale)
                return;
            std::vector<std::string> argv = python_step(python, path, "rpmcow.vendor_dnf5");
            argv.insert(argv.end(), {"refresh", "--installroot", root.empty() ? "/" : root,
                                     "--vendor-conf", vendor_conf});
            std::string out;
            run_step(argv, out);
        } catch (...) {
        }
    }

private:
    std::string python, path, vendor_conf;
};

}  // namespace

extern "C" {

libdnf5::PluginAPIVersion libdnf_plugin_get_api_version(void) {
    return API;
}

const char * libdnf_plugin_get_name(void) {
    return NAME;
}

libdnf5::plugin::Version libdnf_plugin_get_version(void) {
    return VERSION;
}

libdnf5::plugin::IPlugin * libdnf_plugin_new_instance(
    libdnf5::LibraryVersion, libdnf5::plugin::IPluginData & data, libdnf5::ConfigParser & parser) try {
    return new StickyVendor(data, parser);
} catch (...) {
    last_exception = std::current_exception();
    return nullptr;
}

void libdnf_plugin_delete_instance(libdnf5::plugin::IPlugin * plugin) {
    delete plugin;
}

std::exception_ptr * libdnf_plugin_get_last_exception(void) {
    return &last_exception;
}

}  // extern "C"
