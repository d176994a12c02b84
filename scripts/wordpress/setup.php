<?php
/**
 * Non-interactive, idempotent WordPress set-up for scripts/wordpress.sh (run with php-cli, not through the web
 * server): install the site, pretty permalinks, an author user, an Application Password for the admin, and
 * credentials.json.
 *
 *   php setup.php SITE_DIR CREDENTIALS_JSON
 *
 * Everything else comes from the environment (WPS_*), set by wordpress.sh.
 */

if (PHP_SAPI !== 'cli') {
    exit(1);
}
[$_, $site, $credentials_file] = $argv + [null, null, null];
if (!$site || !$credentials_file) {
    fwrite(STDERR, "usage: php setup.php SITE_DIR CREDENTIALS_JSON\n");
    exit(2);
}

function env_or_die(string $name): string
{
    $value = getenv($name);
    if ($value === false || $value === '') {
        fwrite(STDERR, "setup.php: $name is not set\n");
        exit(2);
    }
    return $value;
}

$url = env_or_die('WPS_URL');
$admin_user = env_or_die('WPS_ADMIN_USER');
$admin_password = env_or_die('WPS_ADMIN_PASSWORD');
$admin_email = env_or_die('WPS_ADMIN_EMAIL');
$author_user = env_or_die('WPS_AUTHOR_USER');
$author_email = env_or_die('WPS_AUTHOR_EMAIL');
$timezone = getenv('WPS_TIMEZONE') ?: 'UTC';
$app_name = 'kordiam-bridge';

$parts = parse_url($url);
$_SERVER['HTTP_HOST'] = $parts['host'] . (isset($parts['port']) ? ':' . $parts['port'] : '');
$_SERVER['SERVER_NAME'] = $parts['host'];
$_SERVER['SERVER_PORT'] = (string) ($parts['port'] ?? 80);
$_SERVER['REQUEST_URI'] = '/';
$_SERVER['REQUEST_METHOD'] = 'GET';
$_SERVER['SERVER_PROTOCOL'] = 'HTTP/1.1';

// Pluggable: no e-mail about the new site (there is no MTA).
function wp_new_blog_notification($blog_title, $blog_url, $user_id, $password) {}

define('WP_INSTALLING', true);
require $site . '/wp-load.php';
require_once ABSPATH . 'wp-admin/includes/upgrade.php';
require_once ABSPATH . 'wp-admin/includes/user.php';

if (!is_blog_installed()) {
    $result = wp_install('Kordiam bridge test site', $admin_user, $admin_email, false, '', wp_slash($admin_password));
    if (is_wp_error($result)) {
        fwrite(STDERR, 'setup.php: wp_install failed: ' . $result->get_error_message() . "\n");
        exit(1);
    }
    fwrite(STDERR, "setup.php: installed WordPress " . get_bloginfo('version') . "\n");
}

$admin = get_user_by('login', $admin_user);
if (!$admin) {
    fwrite(STDERR, "setup.php: admin user $admin_user is missing\n");
    exit(1);
}
// Keep the admin password in step with the one in credentials.json (for logging in with a browser).
if (!wp_check_password($admin_password, $admin->user_pass, $admin->ID)) {
    wp_set_password($admin_password, $admin->ID);
}

// Pretty permalinks (served by router.php); /?rest_route= keeps working regardless.
if (get_option('permalink_structure') !== '/%year%/%monthnum%/%postname%/') {
    update_option('permalink_structure', '/%year%/%monthnum%/%postname%/');
}
flush_rewrite_rules(false);
update_option('timezone_string', $timezone);
update_option('gmt_offset', '');
update_option('siteurl', $url);
update_option('home', $url);

$author = get_user_by('email', $author_email);
if (!$author) {
    $author_id = wp_insert_user([
        'user_login' => $author_user,
        'user_email' => $author_email,
        'user_pass' => wp_generate_password(24),
        'role' => 'author',
        'display_name' => 'Kordiam Test Author',
    ]);
    if (is_wp_error($author_id)) {
        fwrite(STDERR, 'setup.php: cannot create the author: ' . $author_id->get_error_message() . "\n");
        exit(1);
    }
} else {
    $author_id = $author->ID;
}

if (!wp_is_application_passwords_available()) {
    fwrite(STDERR, "setup.php: Application Passwords are not available (is WP_ENVIRONMENT_TYPE local?)\n");
    exit(1);
}

// Reuse the Application Password in credentials.json while it still authenticates; otherwise make a new one.
$app_password = null;
if (is_readable($credentials_file)) {
    $old = json_decode((string) file_get_contents($credentials_file), true);
    $candidate = is_array($old) ? ($old['app_password'] ?? null) : null;
    if (is_string($candidate)) {
        $plain = WP_Application_Passwords::chunk_password(preg_replace('/[^a-z\d]/i', '', $candidate));
        foreach (WP_Application_Passwords::get_user_application_passwords($admin->ID) as $item) {
            if (wp_check_password(preg_replace('/[^a-z\d]/i', '', $candidate), $item['password'], $admin->ID)) {
                $app_password = $plain;
                break;
            }
        }
    }
}
if ($app_password === null) {
    foreach (WP_Application_Passwords::get_user_application_passwords($admin->ID) as $item) {
        if ($item['name'] === $app_name) {
            WP_Application_Passwords::delete_application_password($admin->ID, $item['uuid']);
        }
    }
    $created = WP_Application_Passwords::create_new_application_password($admin->ID, ['name' => $app_name]);
    if (is_wp_error($created)) {
        fwrite(STDERR, 'setup.php: cannot create an Application Password: ' . $created->get_error_message() . "\n");
        exit(1);
    }
    $app_password = WP_Application_Passwords::chunk_password($created[0]);
    fwrite(STDERR, "setup.php: created a new Application Password for $admin_user\n");
}

$credentials = [
    'url' => $url,
    'username' => $admin_user,
    'app_password' => $app_password,
    'author_email' => $author_email,
    'author_id' => (int) $author_id,
    'admin_password' => $admin_password,
    'wordpress_version' => get_bloginfo('version'),
    'timezone' => $timezone,
];
$tmp = $credentials_file . '.tmp';
file_put_contents($tmp, json_encode($credentials, JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES) . "\n");
chmod($tmp, 0600);
rename($tmp, $credentials_file);
