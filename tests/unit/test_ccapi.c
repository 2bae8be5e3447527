/*
 * test_ccapi.c - the Constant Contact client as a specification: parsing of
 * the bodies the official v3 OpenAPI document shows, error classification per
 * status and body, next-link joining, request-body serialization and its size
 * estimate, and (against a canned one-shot HTTP server on 127.0.0.1) what goes
 * on the wire, Retry-After, timeouts and secret redaction.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ccsync/ccapi.h"
#include "testsupport.h"

/* Examples of the official CC v3 OpenAPI document (components.schemas.<name>.example),
 * serialized compactly by a script; not edited by hand. */
/* getAllLists_200_response */
static const char DOC_LIST_PAGE[] =
    "{\"lists_count\":249,\"_links\":{\"next\":{\"href\":\"/v3/activities/"
    "04fe9a97-a579-43c5-bb1a-58ed29"
    "bf0a6a\"}},\"lists\":[{\"membership_count\":327,\"list_id\":\"06526938-56dd-11e9-932a-"
    "fa163ea075fa"
    "\",\"updated_at\":\"2016-03-03T15:56:29.000Z\",\"name\":\"Multiple "
    "purchases\",\"description\":\"List "
    "of repeat "
    "customers.\",\"created_at\":\"2016-01-23T13:48:44.108Z\",\"favorite\":false,\"deleted_at"
    "\":\"2016-03-03T15:56:29.000Z\"},{\"membership_count\":327,\"list_id\":\"06526938-56dd-11e9-"
    "932a-f"
    "a163ea075fa\",\"updated_at\":\"2016-03-03T15:56:29.000Z\",\"name\":\"Multiple "
    "purchases\",\"descript"
    "ion\":\"List of repeat "
    "customers.\",\"created_at\":\"2016-01-23T13:48:44.108Z\",\"favorite\":false,"
    "\"deleted_at\":\"2016-03-03T15:56:29.000Z\"}]}";
/* updateList_200_response */
static const char DOC_LIST_CREATED[] =
    "{\"list_id\":\"06526938-56dd-11e9-932a-fa163ea075fa\",\"updated_at\":\"2016-03-03T15:56:29."
    "000Z\","
    "\"name\":\"Multiple purchases\",\"description\":\"List of repeat "
    "customers.\",\"created_at\":\"2016-0"
    "1-23T13:48:44.108Z\",\"favorite\":false,\"deleted_at\":\"2016-03-03T15:56:29.000Z\"}";
/* getList_200_response */
static const char DOC_LIST[] = "{\"membership_count\":327,\"list_id\":\"06526938-56dd-11e9-932a-"
                               "fa163ea075fa\",\"updated_at\":\"201"
                               "6-03-03T15:56:29.000Z\",\"name\":\"Multiple "
                               "purchases\",\"description\":\"List of repeat customers"
                               ".\",\"created_at\":\"2016-01-23T13:48:44.108Z\",\"favorite\":false,"
                               "\"deleted_at\":\"2016-03-03T15:56"
                               ":29.000Z\"}";
/* deleteList_202_response */
static const char DOC_DELETE_LIST_202[] =
    "{\"percent_done\":1,\"updated_at\":\"2016-03-03T15:56:29.000Z\",\"_links\":{\"self\":{"
    "\"href\":\"/v3/ac"
    "tivities/04fa57a7-cf55-4185-cc1a-58ed29bf0a6a\"}},\"activity_id\":\"046b6c7f-0b8a-43b9-b35d-64"
    "89e6daee91\",\"activity_errors\":[\"Message describing the error condition.\",\"Message "
    "describi"
    "ng the error "
    "condition.\"],\"created_at\":\"2016-03-03T15:53:04.000Z\",\"state\":\"initialized\"}";
/* createCSVImportActivity_201_response */
static const char DOC_IMPORT_201[] =
    "{\"completed_at\":\"2016-01-23T13:48:44.108Z\",\"percent_done\":75,\"updated_at\":\"2016-01-"
    "23T13:4"
    "8:44.108Z\",\"_links\":{\"self\":{\"href\":\"/v3/activities/"
    "04fe9a97-a579-43c5-bb1a-58ed29bf0a6a\"}"
    "},\"activity_id\":\"86b90820-cc52-11ea-9dad-fa163e3d9194\",\"activity_errors\":[\"Message "
    "describ"
    "ing the error condition.\",\"Message describing the error "
    "condition.\"],\"started_at\":\"2016-01"
    "-23T13:48:40.108Z\",\"created_at\":\"2016-01-23T13:48:44.108Z\",\"state\":\"initialized\","
    "\"source_f"
    "ile_name\":\"2016-21-04-contact_import.xls\",\"status\":{\"correctable_count\":1,\"cannot_add_"
    "to_l"
    "ist_count\":1,\"items_total_count\":87,\"error_count\":1,\"person_count\":20}}";
/* createListRemoveActivity_201_response */
static const char DOC_REMOVE_201[] =
    "{\"completed_at\":\"2016-01-23T13:48:44.108Z\",\"percent_done\":75,\"updated_at\":\"2016-01-"
    "23T13:4"
    "8:44.108Z\",\"_links\":{\"self\":{\"href\":\"/v3/activities/"
    "04fe9a97-a579-43c5-bb1a-58ed29bf0a6a\"}"
    "},\"activity_id\":\"86b90820-cc52-11ea-9dad-fa163e3d9194\",\"activity_errors\":[\"Message "
    "describ"
    "ing the error condition.\",\"Message describing the error "
    "condition.\"],\"started_at\":\"2016-01"
    "-23T13:48:44.108Z\",\"created_at\":\"2016-01-23T13:48:44.108Z\",\"state\":\"initialized\","
    "\"status\":"
    "{\"items_completed_count\":652,\"list_count\":3,\"items_total_count\":2200}}";
/* getActivityById_200_response */
static const char DOC_ACTIVITY[] = "{\"completed_at\":\"2016-01-23T13:48:44.108Z\",\"percent_"
                                   "done\":75,\"updated_at\":\"2016-01-23T13:4"
                                   "8:44.108Z\",\"_links\":{\"self\":{\"href\":\"/v3/activities/"
                                   "04fe9a97-a579-43c5-bb1a-58ed29bf0a6a\"}"
                                   ",\"results\":{\"href\":\"/v3/contacts_exports/"
                                   "04fe9a97-a579-43c5-bb1a-58ed29bf0a6a\"}},\"activity"
                                   "_id\":\"86b90820-cc52-11ea-9dad-fa163e3d9194\",\"activity_"
                                   "errors\":[\"Message describing the err"
                                   "or condition.\",\"Message describing the error "
                                   "condition.\"],\"started_at\":\"2016-01-23T13:48:4"
                                   "4.108Z\",\"created_at\":\"2016-01-23T13:48:44.108Z\",\"state\":"
                                   "\"initialized\",\"source_file_name\":\""
                                   "2016-21-04-contact_import.xls\",\"status\":{\"items_completed_"
                                   "count\":2100,\"list_count\":3,\"corr"
                                   "ectable_count\":1,\"cannot_add_to_list_count\":1,\"items_total_"
                                   "count\":2200,\"error_count\":1,\"pe"
                                   "rson_count\":8750}}";
/* getAllActivities_200_response */
static const char DOC_ACTIVITY_PAGE[] =
    "{\"_links\":{\"next\":{\"href\":\"/v3/activities/"
    "04fe9a97-a579-43c5-bb1a-58ed29bf0a6a\"}},\"activit"
    "ies\":[{\"completed_at\":\"2016-01-23T13:48:44.108Z\",\"percent_done\":75,\"updated_at\":"
    "\"2016-01-2"
    "3T13:48:44.108Z\",\"_links\":{\"self\":{\"href\":\"/v3/activities/"
    "04fe9a97-a579-43c5-bb1a-58ed29bf"
    "0a6a\"},\"results\":{\"href\":\"/v3/contacts_exports/"
    "04fe9a97-a579-43c5-bb1a-58ed29bf0a6a\"}},\"ac"
    "tivity_id\":\"86b90820-cc52-11ea-9dad-fa163e3d9194\",\"activity_errors\":[\"Message "
    "describing t"
    "he error condition.\",\"Message describing the error "
    "condition.\"],\"started_at\":\"2016-01-23T1"
    "3:48:44.108Z\",\"created_at\":\"2016-01-23T13:48:44.108Z\",\"state\":\"initialized\",\"source_"
    "file_n"
    "ame\":\"2016-21-04-contact_import.xls\",\"status\":{\"items_completed_count\":2100,\"list_"
    "count\":3"
    ",\"correctable_count\":1,\"cannot_add_to_list_count\":1,\"items_total_count\":2200,\"error_"
    "count\""
    ":1,\"person_count\":8750}},{\"completed_at\":\"2016-01-23T13:48:44.108Z\",\"percent_done\":75,"
    "\"upd"
    "ated_at\":\"2016-01-23T13:48:44.108Z\",\"_links\":{\"self\":{\"href\":\"/v3/activities/"
    "04fe9a97-a579"
    "-43c5-bb1a-58ed29bf0a6a\"},\"results\":{\"href\":\"/v3/contacts_exports/"
    "04fe9a97-a579-43c5-bb1a-"
    "58ed29bf0a6a\"}},\"activity_id\":\"86b90820-cc52-11ea-9dad-fa163e3d9194\",\"activity_errors\":"
    "[\"M"
    "essage describing the error condition.\",\"Message describing the error condition.\"],\"starte"
    "d_at\":\"2016-01-23T13:48:44.108Z\",\"created_at\":\"2016-01-23T13:48:44.108Z\",\"state\":"
    "\"initiali"
    "zed\",\"source_file_name\":\"2016-21-04-contact_import.xls\",\"status\":{\"items_completed_"
    "count\":"
    "2100,\"list_count\":3,\"correctable_count\":1,\"cannot_add_to_list_count\":1,\"items_total_"
    "count\""
    ":2200,\"error_count\":1,\"person_count\":8750}}]}";
/* getAllContacts_200_response */
static const char DOC_CONTACT_PAGE[] =
    "{\"_links\":{\"next\":{\"href\":\"/v3/activities/"
    "04fe9a97-a579-43c5-bb1a-58ed29bf0a6a\"}},\"contact"
    "s_count\":3249,\"contacts\":[{\"notes\":[{\"note_id\":\"3fa85f64-5717-4562-b3fc-"
    "2c963f66afa6\",\"cre"
    "ated_at\":\"2021-05-12T13:48:44.108Z\",\"content\":\"This contact resubscribed on "
    "2021-05-12.\"},"
    "{\"note_id\":\"3fa85f64-5717-4562-b3fc-2c963f66afa6\",\"created_at\":\"2021-05-12T13:48:44."
    "108Z\","
    "\"content\":\"This contact resubscribed on "
    "2021-05-12.\"},{\"note_id\":\"3fa85f64-5717-4562-b3fc-"
    "2c963f66afa6\",\"created_at\":\"2021-05-12T13:48:44.108Z\",\"content\":\"This contact "
    "resubscribed"
    " on "
    "2021-05-12.\"},{\"note_id\":\"3fa85f64-5717-4562-b3fc-2c963f66afa6\",\"created_at\":\"2021-05-"
    "12T13:48:44.108Z\",\"content\":\"This contact resubscribed on "
    "2021-05-12.\"},{\"note_id\":\"3fa85f"
    "64-5717-4562-b3fc-2c963f66afa6\",\"created_at\":\"2021-05-12T13:48:44.108Z\",\"content\":"
    "\"This co"
    "ntact resubscribed on "
    "2021-05-12.\"}],\"custom_fields\":[{\"custom_field_id\":\"1618ae62-4752-11"
    "e9-9c8a-fa163e6b01c1\",\"choice_ids\":[\"000001\",\"000001\"],\"value\":\"Tesla S "
    "2017\"},{\"custom_fi"
    "eld_id\":\"1618ae62-4752-11e9-9c8a-fa163e6b01c1\",\"choice_ids\":[\"000001\",\"000001\"],"
    "\"value\":\"T"
    "esla S "
    "2017\"},{\"custom_field_id\":\"1618ae62-4752-11e9-9c8a-fa163e6b01c1\",\"choice_ids\":[\"000"
    "001\",\"000001\"],\"value\":\"Tesla S "
    "2017\"},{\"custom_field_id\":\"1618ae62-4752-11e9-9c8a-fa163e6"
    "b01c1\",\"choice_ids\":[\"000001\",\"000001\"],\"value\":\"Tesla S "
    "2017\"},{\"custom_field_id\":\"1618ae"
    "62-4752-11e9-9c8a-fa163e6b01c1\",\"choice_ids\":[\"000001\",\"000001\"],\"value\":\"Tesla S "
    "2017\"}],"
    "\"street_addresses\":[{\"country\":\"United "
    "States\",\"updated_at\":\"2016-03-03T15:56:29.000Z\",\"ci"
    "ty\":\"Chicago\",\"kind\":\"home\",\"street\":\"123 Kashmir Valley "
    "Road\",\"street_address_id\":\"977a9a"
    "2e-3e00-11ea-804b-fa163e56c9b0\",\"created_at\":\"2016-03-03T15:53:04.000Z\",\"state\":"
    "\"Illinois\""
    ",\"postal_code\":\"60609\"},{\"country\":\"United "
    "States\",\"updated_at\":\"2016-03-03T15:56:29.000Z\""
    ",\"city\":\"Chicago\",\"kind\":\"home\",\"street\":\"123 Kashmir Valley "
    "Road\",\"street_address_id\":\"97"
    "7a9a2e-3e00-11ea-804b-fa163e56c9b0\",\"created_at\":\"2016-03-03T15:53:04.000Z\",\"state\":"
    "\"Illin"
    "ois\",\"postal_code\":\"60609\"},{\"country\":\"United "
    "States\",\"updated_at\":\"2016-03-03T15:56:29.0"
    "00Z\",\"city\":\"Chicago\",\"kind\":\"home\",\"street\":\"123 Kashmir Valley "
    "Road\",\"street_address_id\""
    ":\"977a9a2e-3e00-11ea-804b-fa163e56c9b0\",\"created_at\":\"2016-03-03T15:53:04.000Z\","
    "\"state\":\"I"
    "llinois\",\"postal_code\":\"60609\"}],\"sms_channel\":{\"create_source\":\"Account\","
    "\"country_code\":\""
    "US\",\"dial_code\":\"1\",\"sms_address\":\"7815551212\",\"sms_channel_id\":\"3fa85f64-5712-"
    "6245-b3fc-2"
    "c963f66bfc6\",\"update_source\":\"Contact\",\"sms_channel_consents\":[{\"advertised_"
    "frequency\":\"1\""
    ",\"opt_out_date\":\"2016-01-23T13:48:44.108Z\",\"advertised_interval\":\"monthly\",\"updated_"
    "at\":\"2"
    "016-01-23T13:48:44.108Z\",\"opt_in_date\":\"2016-01-23T13:48:44.108Z\",\"created_at\":\"2016-"
    "01-23"
    "T13:48:44.108Z\",\"sms_consent_permission\":\"explicit\",\"consent_type\":\"promotional_sms\"}"
    ",{\"ad"
    "vertised_frequency\":\"1\",\"opt_out_date\":\"2016-01-23T13:48:44.108Z\",\"advertised_"
    "interval\":\"m"
    "onthly\",\"updated_at\":\"2016-01-23T13:48:44.108Z\",\"opt_in_date\":\"2016-01-23T13:48:44."
    "108Z\",\""
    "created_at\":\"2016-01-23T13:48:44.108Z\",\"sms_consent_permission\":\"explicit\",\"consent_"
    "type\":"
    "\"promotional_sms\"}]},\"last_name\":\"Lang\",\"created_at\":\"2016-01-23T13:48:44.108Z\","
    "\"contact_i"
    "d\":\"1618ae62-4752-11e9-9c8a-fa163e6b01c1\",\"update_source\":\"Contact\",\"deleted_at\":"
    "\"2016-07-"
    "08T00:00:00.000Z\",\"birthday_day\":24,\"create_source\":\"Account\",\"phone_numbers\":[{"
    "\"phone_num"
    "ber_id\":\"6eec28a6-1cf5-11ea-859f-fa163e56c9b0\",\"create_source\":\"Account\",\"updated_"
    "at\":\"201"
    "6-03-03T15:56:29.000Z\",\"kind\":\"home\",\"created_at\":\"2016-03-03T15:53:04.000Z\",\"phone_"
    "number"
    "\":\"+1-555-555-5555\",\"update_source\":\"Account\"},{\"phone_number_id\":\"6eec28a6-1cf5-"
    "11ea-859f"
    "-fa163e56c9b0\",\"create_source\":\"Account\",\"updated_at\":\"2016-03-03T15:56:29.000Z\","
    "\"kind\":\"h"
    "ome\",\"created_at\":\"2016-03-03T15:53:04.000Z\",\"phone_number\":\"+1-555-555-5555\","
    "\"update_sour"
    "ce\":\"Account\"},{\"phone_number_id\":\"6eec28a6-1cf5-11ea-859f-fa163e56c9b0\",\"create_"
    "source\":\""
    "Account\",\"updated_at\":\"2016-03-03T15:56:29.000Z\",\"kind\":\"home\",\"created_at\":\"2016-"
    "03-03T15"
    ":53:04.000Z\",\"phone_number\":\"+1-555-555-5555\",\"update_source\":\"Account\"}],\"email_"
    "address\":"
    "{\"address\":\"dlang@example.com\",\"opt_out_date\":\"2016-01-23T13:48:44.108Z\",\"updated_"
    "at\":\"201"
    "6-03-03T15:56:29.000Z\",\"opt_in_source\":\"Contact\",\"opt_in_date\":\"2016-01-23T13:48:44."
    "108Z\","
    "\"opt_out_reason\":\"I am no longer interested in this "
    "service.\",\"created_at\":\"2016-03-03T15:"
    "53:04.000Z\",\"opt_out_source\":\"Contact\",\"confirm_status\":\"confirmed\",\"permission_to_"
    "send\":\""
    "implicit\"},\"updated_at\":\"2016-01-23T13:48:44.108Z\",\"list_memberships\":[\"07936f78-662a-"
    "11eb"
    "-af0a-fa163e56c9b0\",\"07936f78-662a-11eb-af0a-fa163e56c9b0\",\"07936f78-662a-11eb-af0a-fa163e"
    "56c9b0\",\"07936f78-662a-11eb-af0a-fa163e56c9b0\",\"07936f78-662a-11eb-af0a-fa163e56c9b0\"],"
    "\"co"
    "mpany_name\":\"Acme "
    "Corp.\",\"birthday_month\":11,\"taggings\":[\"e7ddac60-51da-11eb-b3a4-fa163e6b"
    "01c1\",\"e7ddac60-51da-11eb-b3a4-fa163e6b01c1\",\"e7ddac60-51da-11eb-b3a4-fa163e6b01c1\","
    "\"e7dda"
    "c60-51da-11eb-b3a4-fa163e6b01c1\",\"e7ddac60-51da-11eb-b3a4-fa163e6b01c1\"],\"first_name\":"
    "\"Deb"
    "ora\",\"job_title\":\"Musician\",\"anniversary\":\"2006-11-15T00:00:00.000Z\"},{\"notes\":[{"
    "\"note_id\""
    ":\"3fa85f64-5717-4562-b3fc-2c963f66afa6\",\"created_at\":\"2021-05-12T13:48:44.108Z\","
    "\"content\":"
    "\"This contact resubscribed on "
    "2021-05-12.\"},{\"note_id\":\"3fa85f64-5717-4562-b3fc-2c963f66af"
    "a6\",\"created_at\":\"2021-05-12T13:48:44.108Z\",\"content\":\"This contact resubscribed on "
    "2021-0"
    "5-12.\"},{\"note_id\":\"3fa85f64-5717-4562-b3fc-2c963f66afa6\",\"created_at\":\"2021-05-12T13:"
    "48:4"
    "4.108Z\",\"content\":\"This contact resubscribed on "
    "2021-05-12.\"},{\"note_id\":\"3fa85f64-5717-45"
    "62-b3fc-2c963f66afa6\",\"created_at\":\"2021-05-12T13:48:44.108Z\",\"content\":\"This contact "
    "resu"
    "bscribed on "
    "2021-05-12.\"},{\"note_id\":\"3fa85f64-5717-4562-b3fc-2c963f66afa6\",\"created_at\":\""
    "2021-05-12T13:48:44.108Z\",\"content\":\"This contact resubscribed on "
    "2021-05-12.\"}],\"custom_f"
    "ields\":[{\"custom_field_id\":\"1618ae62-4752-11e9-9c8a-fa163e6b01c1\",\"choice_ids\":["
    "\"000001\",\""
    "000001\"],\"value\":\"Tesla S "
    "2017\"},{\"custom_field_id\":\"1618ae62-4752-11e9-9c8a-fa163e6b01c1\""
    ",\"choice_ids\":[\"000001\",\"000001\"],\"value\":\"Tesla S "
    "2017\"},{\"custom_field_id\":\"1618ae62-475"
    "2-11e9-9c8a-fa163e6b01c1\",\"choice_ids\":[\"000001\",\"000001\"],\"value\":\"Tesla S "
    "2017\"},{\"custo"
    "m_field_id\":\"1618ae62-4752-11e9-9c8a-fa163e6b01c1\",\"choice_ids\":[\"000001\",\"000001\"],"
    "\"value"
    "\":\"Tesla S "
    "2017\"},{\"custom_field_id\":\"1618ae62-4752-11e9-9c8a-fa163e6b01c1\",\"choice_ids\":["
    "\"000001\",\"000001\"],\"value\":\"Tesla S "
    "2017\"}],\"street_addresses\":[{\"country\":\"United States\""
    ",\"updated_at\":\"2016-03-03T15:56:29.000Z\",\"city\":\"Chicago\",\"kind\":\"home\","
    "\"street\":\"123 Kash"
    "mir Valley "
    "Road\",\"street_address_id\":\"977a9a2e-3e00-11ea-804b-fa163e56c9b0\",\"created_at\":\""
    "2016-03-03T15:53:04.000Z\",\"state\":\"Illinois\",\"postal_code\":\"60609\"},{\"country\":"
    "\"United Sta"
    "tes\",\"updated_at\":\"2016-03-03T15:56:29.000Z\",\"city\":\"Chicago\",\"kind\":\"home\","
    "\"street\":\"123 "
    "Kashmir Valley "
    "Road\",\"street_address_id\":\"977a9a2e-3e00-11ea-804b-fa163e56c9b0\",\"created_a"
    "t\":\"2016-03-03T15:53:04.000Z\",\"state\":\"Illinois\",\"postal_code\":\"60609\"},{"
    "\"country\":\"United"
    " States\",\"updated_at\":\"2016-03-03T15:56:29.000Z\",\"city\":\"Chicago\",\"kind\":\"home\","
    "\"street\":\""
    "123 Kashmir Valley "
    "Road\",\"street_address_id\":\"977a9a2e-3e00-11ea-804b-fa163e56c9b0\",\"creat"
    "ed_at\":\"2016-03-03T15:53:04.000Z\",\"state\":\"Illinois\",\"postal_code\":\"60609\"}],\"sms_"
    "channel\""
    ":{\"create_source\":\"Account\",\"country_code\":\"US\",\"dial_code\":\"1\",\"sms_address\":"
    "\"7815551212\""
    ",\"sms_channel_id\":\"3fa85f64-5712-6245-b3fc-2c963f66bfc6\",\"update_source\":\"Contact\","
    "\"sms_ch"
    "annel_consents\":[{\"advertised_frequency\":\"1\",\"opt_out_date\":\"2016-01-23T13:48:44."
    "108Z\",\"ad"
    "vertised_interval\":\"monthly\",\"updated_at\":\"2016-01-23T13:48:44.108Z\",\"opt_in_date\":"
    "\"2016-0"
    "1-23T13:48:44.108Z\",\"created_at\":\"2016-01-23T13:48:44.108Z\",\"sms_consent_permission\":"
    "\"expl"
    "icit\",\"consent_type\":\"promotional_sms\"},{\"advertised_frequency\":\"1\",\"opt_out_date\":"
    "\"2016-0"
    "1-23T13:48:44.108Z\",\"advertised_interval\":\"monthly\",\"updated_at\":\"2016-01-23T13:48:44."
    "108Z"
    "\",\"opt_in_date\":\"2016-01-23T13:48:44.108Z\",\"created_at\":\"2016-01-23T13:48:44.108Z\","
    "\"sms_co"
    "nsent_permission\":\"explicit\",\"consent_type\":\"promotional_sms\"}]},\"last_name\":"
    "\"Lang\",\"creat"
    "ed_at\":\"2016-01-23T13:48:44.108Z\",\"contact_id\":\"1618ae62-4752-11e9-9c8a-fa163e6b01c1\","
    "\"upd"
    "ate_source\":\"Contact\",\"deleted_at\":\"2016-07-08T00:00:00.000Z\",\"birthday_day\":24,"
    "\"create_so"
    "urce\":\"Account\",\"phone_numbers\":[{\"phone_number_id\":\"6eec28a6-1cf5-11ea-859f-"
    "fa163e56c9b0\""
    ",\"create_source\":\"Account\",\"updated_at\":\"2016-03-03T15:56:29.000Z\",\"kind\":\"home\","
    "\"created_"
    "at\":\"2016-03-03T15:53:04.000Z\",\"phone_number\":\"+1-555-555-5555\",\"update_source\":"
    "\"Account\"}"
    ",{\"phone_number_id\":\"6eec28a6-1cf5-11ea-859f-fa163e56c9b0\",\"create_source\":\"Account\","
    "\"upda"
    "ted_at\":\"2016-03-03T15:56:29.000Z\",\"kind\":\"home\",\"created_at\":\"2016-03-03T15:53:04."
    "000Z\",\""
    "phone_number\":\"+1-555-555-5555\",\"update_source\":\"Account\"},{\"phone_number_id\":"
    "\"6eec28a6-1c"
    "f5-11ea-859f-fa163e56c9b0\",\"create_source\":\"Account\",\"updated_at\":\"2016-03-03T15:56:"
    "29.000"
    "Z\",\"kind\":\"home\",\"created_at\":\"2016-03-03T15:53:04.000Z\",\"phone_number\":\"+1-555-"
    "555-5555\","
    "\"update_source\":\"Account\"}],\"email_address\":{\"address\":\"dlang@example.com\",\"opt_"
    "out_date\":"
    "\"2016-01-23T13:48:44.108Z\",\"updated_at\":\"2016-03-03T15:56:29.000Z\",\"opt_in_source\":"
    "\"Contac"
    "t\",\"opt_in_date\":\"2016-01-23T13:48:44.108Z\",\"opt_out_reason\":\"I am no longer "
    "interested in"
    " this "
    "service.\",\"created_at\":\"2016-03-03T15:53:04.000Z\",\"opt_out_source\":\"Contact\",\"confir"
    "m_status\":\"confirmed\",\"permission_to_send\":\"implicit\"},\"updated_at\":\"2016-01-23T13:"
    "48:44.1"
    "08Z\",\"list_memberships\":[\"07936f78-662a-11eb-af0a-fa163e56c9b0\",\"07936f78-662a-11eb-"
    "af0a-f"
    "a163e56c9b0\",\"07936f78-662a-11eb-af0a-fa163e56c9b0\",\"07936f78-662a-11eb-af0a-"
    "fa163e56c9b0\""
    ",\"07936f78-662a-11eb-af0a-fa163e56c9b0\"],\"company_name\":\"Acme "
    "Corp.\",\"birthday_month\":11,\""
    "taggings\":[\"e7ddac60-51da-11eb-b3a4-fa163e6b01c1\",\"e7ddac60-51da-11eb-b3a4-fa163e6b01c1\","
    "\""
    "e7ddac60-51da-11eb-b3a4-fa163e6b01c1\",\"e7ddac60-51da-11eb-b3a4-fa163e6b01c1\",\"e7ddac60-51d"
    "a-11eb-b3a4-fa163e6b01c1\"],\"first_name\":\"Debora\",\"job_title\":\"Musician\","
    "\"anniversary\":\"200"
    "6-11-15T00:00:00.000Z\"}],\"status\":\"status\"}";

/* ---- error classification ---- */

static void test_classify_400_array_is_permanent_with_key_and_message(void **state)
{
    struct ccapi_error err;
    ccapi_classify(400,
                   "[{\"error_key\":\"contacts.api.validation.error\","
                   "\"error_message\":\"Email is invalid\"},{\"error_key\":\"x\"}]",
                   -1, &err);
    assert_int_equal(err.status, CCAPI_PERMANENT);
    assert_int_equal(err.http_status, 400);
    assert_string_equal(err.error_key, "contacts.api.validation.error");
    assert_string_equal(err.message, "HTTP 400: Email is invalid");
    assert_false(err.maybe_applied);
    assert_int_equal(err.retry_after_s, -1);
}

static void test_classify_404_and_409_arrays(void **state)
{
    struct ccapi_error err;
    ccapi_classify(404, "[{\"error_key\":\"not.found\",\"error_message\":\"No list\"}]", -1, &err);
    assert_int_equal(err.status, CCAPI_NOT_FOUND);
    assert_string_equal(err.error_key, "not.found");
    /* 409: never interpreted beyond its class */
    ccapi_classify(409,
                   "[{\"error_key\":\"contact_lists.api.conflict\",\"error_message\":"
                   "\"The name Members already exists.\"}]",
                   -1, &err);
    assert_int_equal(err.status, CCAPI_CONFLICT);
    assert_false(err.maybe_applied);
}

static void test_classify_401_object_is_unauthorized(void **state)
{
    struct ccapi_error err;
    ccapi_classify(401, "{\"error_key\":\"unauthorized\",\"error_message\":\"Unauthorized\"}", -1,
                   &err);
    assert_int_equal(err.status, CCAPI_UNAUTHORIZED);
    assert_string_equal(err.error_key, "unauthorized");
}

static void test_classify_429_throttled_keeps_retry_after(void **state)
{
    struct ccapi_error err;
    ccapi_classify(429, "{\"error_key\":\"throttled\",\"error_message\":\"Too many requests\"}", 2,
                   &err);
    assert_int_equal(err.status, CCAPI_THROTTLED);
    assert_int_equal(err.retry_after_s, 2);
    assert_false(err.maybe_applied);
}

static void test_classify_429_quota_exceeded_is_quota(void **state)
{
    struct ccapi_error err;
    ccapi_classify(429, "{\"error_key\":\"quota_exceeded\",\"error_message\":\"Daily quota\"}", -1,
                   &err);
    assert_int_equal(err.status, CCAPI_QUOTA);
    assert_string_equal(err.error_key, "quota_exceeded");
}

static void test_classify_429_without_body_is_throttled(void **state)
{
    struct ccapi_error err;
    ccapi_classify(429, "", -1, &err);
    assert_int_equal(err.status, CCAPI_THROTTLED);
    assert_string_equal(err.error_key, "http_429");
}

static void test_classify_5xx_is_transient_and_maybe_applied(void **state)
{
    struct ccapi_error err;
    ccapi_classify(500, NULL, -1, &err);
    assert_int_equal(err.status, CCAPI_TRANSIENT);
    assert_true(err.maybe_applied);
    ccapi_classify(503, "<html><body>Service\nUnavailable</body></html>", 30, &err);
    assert_int_equal(err.status, CCAPI_TRANSIENT);
    assert_int_equal(err.retry_after_s, 30);
    assert_string_equal(err.message, "HTTP 503: <html><body>Service Unavailable</body></html>");
}

static void test_classify_other_4xx_is_permanent(void **state)
{
    struct ccapi_error err;
    int statuses[] = {403, 405, 413, 415, 422};
    for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
        ccapi_classify(statuses[i], "[]", -1, &err);
        assert_int_equal(err.status, CCAPI_PERMANENT);
        assert_int_equal(err.http_status, statuses[i]);
    }
}

static void test_classify_2xx_is_ok(void **state)
{
    struct ccapi_error err;
    ccapi_classify(201, "{}", -1, &err);
    assert_int_equal(err.status, CCAPI_OK);
    ccapi_classify(202, NULL, -1, &err);
    assert_int_equal(err.status, CCAPI_OK);
}

static void test_classify_long_message_is_truncated(void **state)
{
    char body[2048];
    char message[1500];
    memset(message, 'm', sizeof(message) - 1);
    message[sizeof(message) - 1] = '\0';
    snprintf(body, sizeof(body), "[{\"error_key\":\"k\",\"error_message\":\"%s\"}]", message);
    struct ccapi_error err;
    ccapi_classify(400, body, -1, &err);
    assert_int_equal(strlen(err.message), sizeof(err.message) - 1);
}

static void test_classify_token_invalid_grant_is_unauthorized(void **state)
{
    struct ccapi_error err;
    ccapi_classify_token(400,
                         "{\"error\":\"invalid_grant\",\"error_description\":"
                         "\"The refresh token is invalid or expired.\"}",
                         -1, &err);
    assert_int_equal(err.status, CCAPI_UNAUTHORIZED);
    assert_string_equal(err.error_key, "invalid_grant");
    assert_string_equal(err.message, "HTTP 400: The refresh token is invalid or expired.");
    ccapi_classify_token(400, "{\"error\":\"invalid_request\"}", -1, &err);
    assert_int_equal(err.status, CCAPI_PERMANENT);
    ccapi_classify_token(401, "{\"error\":\"invalid_client\"}", -1, &err);
    assert_int_equal(err.status, CCAPI_UNAUTHORIZED);
    ccapi_classify_token(502, "", -1, &err);
    assert_int_equal(err.status, CCAPI_TRANSIENT);
    ccapi_classify_token(429, "", 3, &err);
    assert_int_equal(err.status, CCAPI_THROTTLED);
}

static void test_status_names(void **state)
{
    assert_string_equal(ccapi_status_name(CCAPI_OK), "ok");
    assert_string_equal(ccapi_status_name(CCAPI_QUOTA), "quota");
    assert_string_equal(ccapi_status_name(CCAPI_PERMANENT), "permanent");
}

/* ---- next links ---- */

static void assert_join(const char *base, const char *href, const char *expected)
{
    char *url = ccapi_join_url(base, href);
    if (expected == NULL) {
        assert_null(url);
        return;
    }
    assert_non_null(url);
    assert_string_equal(url, expected);
    free(url);
}

static void test_join_next_href_replaces_v3_with_base(void **state)
{
    assert_join("https://api.cc.email/v3", "/v3/contact_lists?cursor=bGltaXQ9MSZuZXh0PTI",
                "https://api.cc.email/v3/contact_lists?cursor=bGltaXQ9MSZuZXh0PTI");
    assert_join("https://api.cc.email/v3/", "/v3/contacts?cursor=abc",
                "https://api.cc.email/v3/contacts?cursor=abc");
    /* a simulator or proxy under another path keeps its path */
    assert_join("http://127.0.0.1:8085/cc/v3", "/v3/contacts?cursor=abc",
                "http://127.0.0.1:8085/cc/v3/contacts?cursor=abc");
    /* Prism in proxy mode is addressed without /v3 */
    assert_join("http://127.0.0.1:4010", "/v3/activities?cursor=x",
                "http://127.0.0.1:4010/activities?cursor=x");
}

static void test_join_other_paths_use_the_origin(void **state)
{
    assert_join("http://127.0.0.1:8085/v3", "/other/contacts?cursor=1",
                "http://127.0.0.1:8085/other/contacts?cursor=1");
    /* "/v3x" is not the version root */
    assert_join("http://h/v3", "/v3x/a", "http://h/v3x/a");
}

static void test_join_refuses_other_hosts_and_relative_paths(void **state)
{
    assert_join("https://api.cc.email/v3", "https://api.cc.email/v3/contacts?cursor=1",
                "https://api.cc.email/v3/contacts?cursor=1");
    assert_join("https://api.cc.email/v3", "https://evil.example/v3/contacts", NULL);
    assert_join("https://api.cc.email/v3", "https://api.cc.email.evil.example/v3/x", NULL);
    assert_join("https://api.cc.email/v3", "//evil.example/v3/contacts", NULL);
    assert_join("https://api.cc.email/v3", "contacts?cursor=1", NULL);
    assert_join("https://api.cc.email/v3", "", NULL);
    assert_join("not a url", "/v3/contacts", NULL);
}

/* ---- contact lists ---- */

static void test_parse_doc_list_page(void **state)
{
    struct ccapi_list_page page;
    struct ccapi_error err;
    assert_int_equal(ccapi_parse_list_page(DOC_LIST_PAGE, &page, &err), 0);
    assert_int_equal(page.n_lists, 2);
    assert_string_equal(page.lists[0].list_id, "06526938-56dd-11e9-932a-fa163ea075fa");
    assert_string_equal(page.lists[0].name, "Multiple purchases");
    assert_int_equal(page.lists[0].membership_count, 327);
    assert_string_equal(page.lists[0].created_at, "2016-01-23T13:48:44.108Z");
    assert_string_equal(page.lists[0].deleted_at, "2016-03-03T15:56:29.000Z");
    assert_true(page.lists[0].deleted);
    assert_string_equal(page.lists[0].status, "");
    assert_string_equal(page.next_href, "/v3/activities/04fe9a97-a579-43c5-bb1a-58ed29bf0a6a");
    ccapi_list_page_clear(&page);
    assert_null(page.lists);
}

static void test_parse_list_page_last_page_and_status(void **state)
{
    const char *json =
        "{\"lists\":[{\"list_id\":\"a1\",\"name\":\"Board\",\"status\":\"active\","
        "\"description\":\"Kept in step (ref 00ff)\",\"created_at\":\"2026-01-01T00:00:00Z\"},"
        "{\"list_id\":\"a2\",\"name\":\"Old\",\"status\":\"deleted\",\"membership_count\":0}],"
        "\"lists_count\":2,\"_links\":{}}";
    struct ccapi_list_page page;
    struct ccapi_error err;
    assert_int_equal(ccapi_parse_list_page(json, &page, &err), 0);
    assert_int_equal(page.n_lists, 2);
    assert_null(page.next_href);
    assert_false(page.lists[0].deleted);
    assert_string_equal(page.lists[0].description, "Kept in step (ref 00ff)");
    assert_null(page.lists[1].description);
    assert_int_equal(page.lists[0].membership_count, -1);
    assert_string_equal(page.lists[1].status, "deleted");
    assert_true(page.lists[1].deleted);
    assert_int_equal(page.lists[1].membership_count, 0);
    ccapi_list_page_clear(&page);

    assert_int_equal(ccapi_parse_list_page("{\"lists_count\":0}", &page, &err), 0);
    assert_int_equal(page.n_lists, 0);
    ccapi_list_page_clear(&page);
}

static void test_parse_list_page_malformed(void **state)
{
    const char *bad[] = {
        "",
        "not json",
        "[]",
        "{\"lists\":{}}",
        "{\"lists\":[{\"name\":\"no id\"}]}",
        "{\"lists\":[{\"list_id\":\"x\"}]}",
        "{\"lists\":[{\"list_id\":\"ok\",\"name\":\"A\"},{\"list_id\":7,\"name\":\"B\"}]}",
        "{\"lists\":[{\"list_id\":"
        "\"0123456789012345678901234567890123456789012345678901234567890123"
        "\",\"name\":\"too long id\"}]}",
        "{\"lists\":[],\"_links\":{\"next\":{}}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct ccapi_list_page page;
        struct ccapi_error err;
        assert_int_equal(ccapi_parse_list_page(bad[i], &page, &err), -1);
        assert_int_equal(err.status, CCAPI_TRANSIENT);
        assert_string_equal(err.error_key, "bad_response");
        assert_int_equal(page.n_lists, 0);
        assert_null(page.lists);
    }
}

static void test_parse_doc_single_list(void **state)
{
    struct ccapi_list list;
    struct ccapi_error err;
    assert_int_equal(ccapi_parse_list(DOC_LIST_CREATED, &list, &err), 0);
    assert_string_equal(list.list_id, "06526938-56dd-11e9-932a-fa163ea075fa");
    assert_string_equal(list.name, "Multiple purchases");
    assert_int_equal(list.membership_count, -1);
    ccapi_list_clear(&list);
    assert_int_equal(ccapi_parse_list(DOC_LIST, &list, &err), 0);
    assert_int_equal(list.membership_count, 327);
    ccapi_list_clear(&list);
    assert_int_equal(ccapi_parse_list("{\"name\":\"x\"}", &list, &err), -1);
    assert_null(list.name);
}

/* ---- activities ---- */

static void test_parse_activity_ids_of_doc_bodies(void **state)
{
    char id[CCAPI_ID_SIZE];
    struct ccapi_error err;
    assert_int_equal(ccapi_parse_activity_id(DOC_DELETE_LIST_202, id, &err), 0);
    assert_string_equal(id, "046b6c7f-0b8a-43b9-b35d-6489e6daee91");
    assert_int_equal(ccapi_parse_activity_id(DOC_IMPORT_201, id, &err), 0);
    assert_string_equal(id, "86b90820-cc52-11ea-9dad-fa163e3d9194");
    assert_int_equal(ccapi_parse_activity_id(DOC_REMOVE_201, id, &err), 0);
    assert_string_equal(id, "86b90820-cc52-11ea-9dad-fa163e3d9194");
    /* without activity_id, the self link names it */
    assert_int_equal(ccapi_parse_activity_id(
                         "{\"_links\":{\"self\":{\"href\":\"/v3/activities/abc-1\"}}}", id, &err),
                     0);
    assert_string_equal(id, "abc-1");
    assert_int_equal(ccapi_parse_activity_id("{\"state\":\"initialized\"}", id, &err), -1);
    assert_string_equal(err.error_key, "bad_response");
    assert_int_equal(ccapi_parse_activity_id("", id, &err), -1);
}

static void test_parse_doc_activity(void **state)
{
    struct ccapi_activity a;
    struct ccapi_error err;
    assert_int_equal(ccapi_parse_activity(DOC_ACTIVITY, &a, &err), 0);
    assert_string_equal(a.activity_id, "86b90820-cc52-11ea-9dad-fa163e3d9194");
    assert_int_equal(a.state, CCAPI_ACTIVITY_INITIALIZED);
    assert_string_equal(a.state_name, "initialized");
    assert_false(ccapi_activity_finished(a.state));
    assert_int_equal(a.percent_done, 75);
    assert_int_equal(a.items_total_count, 2200);
    assert_int_equal(a.items_completed_count, 2100);
    assert_int_equal(a.cannot_add_to_list_count, 1);
    assert_int_equal(a.error_count, 1);
    assert_int_equal(a.correctable_count, 1);
    assert_int_equal(a.person_count, 8750);
    assert_int_equal(a.list_count, 3);
    assert_string_equal(a.created_at, "2016-01-23T13:48:44.108Z");
    assert_string_equal(a.completed_at, "2016-01-23T13:48:44.108Z");
    assert_int_equal(a.n_errors, 2);
    assert_string_equal(a.errors[0].message, "Message describing the error condition.");
    assert_null(a.errors[0].email);
    ccapi_activity_clear(&a);
}

static void test_parse_activity_errors_name_their_email(void **state)
{
    const char *json = "{\"activity_id\":\"a-1\",\"state\":\"completed\",\"percent_done\":100.0,"
                       "\"status\":{\"items_total_count\":3,\"items_completed_count\":3,"
                       "\"cannot_add_to_list_count\":1},"
                       "\"activity_errors\":[\"Invalid email address: 'bad@@x' (line 2)\","
                       "\"Contact jo.smith+news@example.org could not be added.\","
                       "{\"message\":\"Rejected\",\"email\":\"rej@example.com\"},42]}";
    struct ccapi_activity a;
    struct ccapi_error err;
    assert_int_equal(ccapi_parse_activity(json, &a, &err), 0);
    assert_int_equal(a.state, CCAPI_ACTIVITY_COMPLETED);
    assert_true(ccapi_activity_finished(a.state));
    assert_int_equal(a.percent_done, 100);
    assert_int_equal(a.cannot_add_to_list_count, 1);
    assert_int_equal(a.error_count, -1);
    assert_int_equal(a.n_errors, 3); /* the number entry is skipped */
    assert_null(a.errors[0].email);
    assert_string_equal(a.errors[1].email, "jo.smith+news@example.org");
    assert_string_equal(a.errors[2].message, "Rejected");
    assert_string_equal(a.errors[2].email, "rej@example.com");
    ccapi_activity_clear(&a);
}

static void test_activity_states(void **state)
{
    assert_int_equal(ccapi_activity_state_parse("processing"), CCAPI_ACTIVITY_PROCESSING);
    assert_int_equal(ccapi_activity_state_parse("cancelled"), CCAPI_ACTIVITY_CANCELLED);
    assert_int_equal(ccapi_activity_state_parse("failed"), CCAPI_ACTIVITY_FAILED);
    assert_int_equal(ccapi_activity_state_parse("timed_out"), CCAPI_ACTIVITY_TIMED_OUT);
    assert_int_equal(ccapi_activity_state_parse("paused"), CCAPI_ACTIVITY_UNKNOWN);
    assert_int_equal(ccapi_activity_state_parse(NULL), CCAPI_ACTIVITY_UNKNOWN);
    assert_true(ccapi_activity_finished(CCAPI_ACTIVITY_TIMED_OUT));
    assert_true(ccapi_activity_finished(CCAPI_ACTIVITY_FAILED));
    assert_false(ccapi_activity_finished(CCAPI_ACTIVITY_PROCESSING));
    assert_false(ccapi_activity_finished(CCAPI_ACTIVITY_UNKNOWN));
}

static void test_parse_doc_activity_page(void **state)
{
    struct ccapi_activity_page page;
    struct ccapi_error err;
    assert_int_equal(ccapi_parse_activity_page(DOC_ACTIVITY_PAGE, &page, &err), 0);
    assert_int_equal(page.n_activities, 2);
    assert_string_equal(page.activities[1].activity_id, "86b90820-cc52-11ea-9dad-fa163e3d9194");
    assert_int_equal(page.activities[1].items_total_count, 2200);
    assert_non_null(page.next_href);
    ccapi_activity_page_clear(&page);

    assert_int_equal(ccapi_parse_activity_page("{\"activities\":[{\"state\":\"x\"}]}", &page, &err),
                     -1);
    assert_null(page.activities);
    assert_int_equal(ccapi_parse_activity_page("{\"activities\":\"no\"}", &page, &err), -1);
}

static void test_email_in_message(void **state)
{
    const struct {
        const char *message;
        const char *email;
    } cases[] = {
        {"Email address a@b.co is invalid", "a@b.co"},
        {"\"x.y@example.com\": unsubscribed", "x.y@example.com"},
        {"Could not add <joe@ex.org>.", "joe@ex.org"},
        {"Rejected: jane@example.com.", "jane@example.com"},
        {"no address here", NULL},
        {"a @ sign alone", NULL},
        {"user@", NULL},
        {"first @ then real@mail.example", "real@mail.example"},
        {"Line 2: email address bad..x@example.com is not valid", "bad..x@example.com"},
        {"two at signs a@b@example.com only", NULL},
        {"host@localhost", "host@localhost"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *email = ccapi_email_in_message(cases[i].message);
        if (cases[i].email == NULL) {
            assert_null(email);
        } else {
            assert_non_null(email);
            assert_string_equal(email, cases[i].email);
        }
        free(email);
    }
}

/* ---- contacts ---- */

static void test_parse_doc_contact_page(void **state)
{
    struct ccapi_contact_page page;
    struct ccapi_error err;
    assert_int_equal(ccapi_parse_contact_page(DOC_CONTACT_PAGE, &page, &err), 0);
    assert_int_equal(page.n_contacts, 2);
    struct ccapi_contact *c = &page.contacts[0];
    assert_string_equal(c->contact_id, "1618ae62-4752-11e9-9c8a-fa163e6b01c1");
    assert_string_equal(c->email, "dlang@example.com");
    assert_string_equal(c->permission_to_send, "implicit");
    assert_string_equal(c->first_name, "Debora");
    assert_string_equal(c->last_name, "Lang");
    assert_true(c->deleted);
    assert_int_equal(c->n_list_ids, 5);
    assert_string_equal(c->list_ids[4], "07936f78-662a-11eb-af0a-fa163e56c9b0");
    assert_string_equal(page.next_href, "/v3/activities/04fe9a97-a579-43c5-bb1a-58ed29bf0a6a");
    ccapi_contact_page_clear(&page);
}

static void test_parse_contact_page_minimal_contacts(void **state)
{
    const char *json =
        "{\"contacts\":[{\"contact_id\":\"c-1\",\"email_address\":{\"address\":\"A@Example.com\","
        "\"permission_to_send\":\"unsubscribed\"}},{\"contact_id\":\"c-2\"}]}";
    struct ccapi_contact_page page;
    struct ccapi_error err;
    assert_int_equal(ccapi_parse_contact_page(json, &page, &err), 0);
    assert_int_equal(page.n_contacts, 2);
    assert_string_equal(page.contacts[0].email, "A@Example.com");
    assert_string_equal(page.contacts[0].permission_to_send, "unsubscribed");
    assert_null(page.contacts[0].first_name);
    assert_false(page.contacts[0].deleted);
    assert_int_equal(page.contacts[0].n_list_ids, 0);
    assert_null(page.contacts[1].email);
    assert_string_equal(page.contacts[1].permission_to_send, "");
    assert_null(page.next_href);
    ccapi_contact_page_clear(&page);

    assert_int_equal(ccapi_parse_contact_page("{\"contacts\":[]}", &page, &err), 0);
    assert_int_equal(page.n_contacts, 0);
    ccapi_contact_page_clear(&page);
}

static void test_parse_contact_page_malformed(void **state)
{
    const char *bad[] = {
        "{\"contacts\":[{\"email_address\":{\"address\":\"a@b.c\"}}]}",
        "{\"contacts\":[{\"contact_id\":\"c\",\"list_memberships\":[1]}]}",
        "{\"contacts\":[{\"contact_id\":\"c\",\"list_memberships\":[\"l\"]},{\"contact_id\":\"\"}]"
        "}",
        "{\"contacts\":5}",
        "{\"contacts\":[",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct ccapi_contact_page page;
        struct ccapi_error err;
        assert_int_equal(ccapi_parse_contact_page(bad[i], &page, &err), -1);
        assert_string_equal(err.error_key, "bad_response");
        assert_null(page.contacts);
    }
}

/* ---- tokens ---- */

static void test_parse_token_response(void **state)
{
    const char *json =
        "{\"token_type\":\"Bearer\",\"expires_in\":86400,"
        "\"access_token\":\"eyJraWQiOiJ.access\",\"scope\":\"contact_data offline_access\","
        "\"refresh_token\":\"rt-new-1234567890\"}";
    struct ccapi_token t;
    struct ccapi_error err;
    assert_int_equal(ccapi_parse_token(json, &t, &err), 0);
    assert_string_equal(t.access_token, "eyJraWQiOiJ.access");
    assert_string_equal(t.refresh_token, "rt-new-1234567890");
    assert_int_equal(t.expires_in, 86400);
    assert_string_equal(t.token_type, "Bearer");
    ccapi_token_clear(&t);
    assert_null(t.access_token);

    assert_int_equal(ccapi_parse_token("{\"access_token\":\"only-access\"}", &t, &err), 0);
    assert_null(t.refresh_token);
    assert_int_equal(t.expires_in, -1);
    ccapi_token_clear(&t);

    /* A number no long holds (found by fuzz_ccapi: the cast was undefined) is no
     * lifetime at all, as if absent. */
    const char *huge[] = {"9e34", "-9e34", "1e19", "89999999999999999999999999999999964."};
    for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
        char body[128];
        snprintf(body, sizeof body, "{\"access_token\":\"a\",\"expires_in\":%s}", huge[i]);
        assert_int_equal(ccapi_parse_token(body, &t, &err), 0);
        assert_int_equal(t.expires_in, -1);
        ccapi_token_clear(&t);
    }

    assert_int_equal(ccapi_parse_token("{\"refresh_token\":\"r\"}", &t, &err), -1);
    assert_null(t.refresh_token);
    assert_int_equal(ccapi_parse_token("{\"access_token\":5}", &t, &err), -1);
    assert_int_equal(ccapi_parse_token("oops", &t, &err), -1);
}

static void test_refresh_body_is_form_encoded(void **state)
{
    char *body = ccapi_refresh_body("a+b/c=d&e f", "client-1", true);
    assert_string_equal(body, "grant_type=refresh_token&refresh_token=a%2Bb%2Fc%3Dd%26e%20f"
                              "&client_id=client-1");
    free(body);
    body = ccapi_refresh_body("tok~._-", "client-1", false);
    assert_string_equal(body, "grant_type=refresh_token&refresh_token=tok~._-");
    free(body);
}

/* ---- request bodies ---- */

static void test_import_body_matches_the_doc_schema(void **state)
{
    const struct ccapi_import_contact contacts[] = {
        {"joe.jones@example.com", "Joe", "Jones"},
        {"acme@example.com", "Acme Inc.", "_"},
        {"nameless@example.com", NULL, NULL},
    };
    const char *lists[] = {"04fe9a97-a579-43c5-bb1a-58ed29bf0a6a"};
    size_t len = 0;
    char *body = ccapi_import_body(contacts, 3, lists, 1, &len);
    assert_string_equal(body,
                        "{\"import_data\":[{\"email\":\"joe.jones@example.com\",\"first_name\":"
                        "\"Joe\",\"last_name\":\"Jones\"},{\"email\":\"acme@example.com\","
                        "\"first_name\":\"Acme Inc.\",\"last_name\":\"_\"},{\"email\":"
                        "\"nameless@example.com\"}],\"list_ids\":"
                        "[\"04fe9a97-a579-43c5-bb1a-58ed29bf0a6a\"]}");
    assert_int_equal(len, strlen(body));
    assert_int_equal(ccapi_import_body_size(contacts, 3, lists, 1), len);
    free(body);
}

static void test_import_size_estimate_is_exact_for_awkward_strings(void **state)
{
    const struct ccapi_import_contact contacts[] = {
        {"o'brien/x@example.com", "Quote \"Q\"", "Back\\slash"},
        {"tab@example.com", "Tab\there\nnew\r\b\f", "Ctl\x01\x1f"},
        {"utf8@example.com", "Zo\xc3\xab", "\xe6\x9d\x8e \xf0\x9f\x98\x80"},
        {"empty@example.com", "", ""},
    };
    const char *lists[] = {"l-1", "l-2", "l-3"};
    size_t n = sizeof(contacts) / sizeof(contacts[0]);
    size_t len = 0;
    char *body = ccapi_import_body(contacts, n, lists, 3, &len);
    assert_non_null(body);
    assert_int_equal(ccapi_import_body_size(contacts, n, lists, 3), len);
    /* the per-contact size adds up: overhead + sizes + commas */
    size_t sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += ccapi_import_contact_size(&contacts[i]) + (i > 0 ? 1 : 0);
    assert_int_equal(ccapi_import_body_size(NULL, 0, lists, 3) + sum, len);

    /* and the body parses back to what was given */
    struct json_object *root = json_tokener_parse(body);
    assert_non_null(root);
    struct json_object *data, *item, *v;
    assert_true(json_object_object_get_ex(root, "import_data", &data));
    assert_int_equal(json_object_array_length(data), n);
    item = json_object_array_get_idx(data, 1);
    assert_true(json_object_object_get_ex(item, "first_name", &v));
    assert_string_equal(json_object_get_string(v), "Tab\there\nnew\r\b\f");
    item = json_object_array_get_idx(data, 0);
    assert_true(json_object_object_get_ex(item, "email", &v));
    assert_string_equal(json_object_get_string(v), "o'brien/x@example.com");
    assert_true(json_object_object_get_ex(root, "list_ids", &v));
    assert_int_equal(json_object_array_length(v), 3);
    json_object_put(root);
    free(body);
}

static void test_import_size_of_a_full_chunk_stays_under_4mb(void **state)
{
    /* 40,000 contacts of 80-byte emails and 50-byte names: what a planner must split */
    size_t n = CCAPI_IMPORT_MAX_CONTACTS;
    struct ccapi_import_contact *contacts = calloc(n, sizeof(*contacts));
    char email[81], name[51];
    memset(email, 'e', 80);
    email[80] = '\0';
    memcpy(email + 70, "@example.c", 10);
    memset(name, 'n', 50);
    name[50] = '\0';
    for (size_t i = 0; i < n; i++)
        contacts[i] = (struct ccapi_import_contact){email, name, name};
    const char *lists[] = {"04fe9a97-a579-43c5-bb1a-58ed29bf0a6a"};
    size_t estimate = ccapi_import_body_size(contacts, n, lists, 1);
    size_t len = 0;
    char *body = ccapi_import_body(contacts, n, lists, 1, &len);
    assert_int_equal(estimate, len);
    assert_true(len >= CCAPI_IMPORT_MAX_BYTES); /* too big: the client refuses it */
    free(body);
    free(contacts);
}

static void test_memberships_body(void **state)
{
    const char *contacts[] = {"c-1", "c-2"};
    const char *lists[] = {"l-1"};
    char *body = ccapi_memberships_body(contacts, 2, lists, 1);
    assert_string_equal(body,
                        "{\"source\":{\"contact_ids\":[\"c-1\",\"c-2\"]},\"list_ids\":[\"l-1\"]}");
    free(body);
}

/* ---- over the wire: a canned one-shot HTTP server on 127.0.0.1 ---- */

struct canned {
    int listen_fd;
    int port;
    const char *response; /* written after the request; NULL: never answer */
    char request[65536];  /* what the client sent, headers and body */
    size_t request_len;
    pthread_t thread;
};

/* Reads one request (headers, then Content-Length bytes of body). */
static void canned_read(int fd, struct canned *s)
{
    size_t want = 0;
    bool headers_done = false;
    while (s->request_len < sizeof(s->request) - 1) {
        ssize_t n = read(fd, s->request + s->request_len, sizeof(s->request) - 1 - s->request_len);
        if (n <= 0)
            break;
        s->request_len += (size_t)n;
        s->request[s->request_len] = '\0';
        char *end = strstr(s->request, "\r\n\r\n");
        if (!headers_done && end != NULL) {
            headers_done = true;
            char *cl = strcasestr(s->request, "Content-Length:");
            size_t body = cl != NULL && cl < end ? strtoul(cl + 15, NULL, 10) : 0;
            want = (size_t)(end + 4 - s->request) + body;
        }
        if (headers_done && s->request_len >= want)
            break;
    }
}

static void *canned_serve(void *arg)
{
    struct canned *s = arg;
    int fd = accept(s->listen_fd, NULL, NULL);
    if (fd < 0)
        return NULL;
    canned_read(fd, s);
    if (s->response != NULL) {
        ssize_t w = write(fd, s->response, strlen(s->response));
        (void)w;
    } else {
        usleep(1500 * 1000); /* longer than the client's timeout */
    }
    close(fd);
    return NULL;
}

static void canned_start(struct canned *s, const char *response)
{
    memset(s, 0, sizeof(*s));
    s->response = response;
    s->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s->listen_fd >= 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(s->listen_fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    socklen_t len = sizeof(addr);
    assert_int_equal(getsockname(s->listen_fd, (struct sockaddr *)&addr, &len), 0);
    s->port = ntohs(addr.sin_port);
    assert_int_equal(listen(s->listen_fd, 4), 0);
    assert_int_equal(pthread_create(&s->thread, NULL, canned_serve, s), 0);
}

static void canned_stop(struct canned *s)
{
    pthread_join(s->thread, NULL);
    close(s->listen_fd);
}

static struct ccapi *client_for(const struct canned *s, long timeout_ms)
{
    char base[64];
    snprintf(base, sizeof(base), "http://127.0.0.1:%d/v3", s->port);
    struct ccapi *c = ccapi_new(base, timeout_ms);
    assert_non_null(c);
    assert_int_equal(ccapi_set_token(c, "access-token-SECRET-123"), 0);
    return c;
}

static char *http_response(int status, const char *extra_headers, const char *body)
{
    char *text = NULL;
    int rc = asprintf(&text,
                      "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                      "Connection: close\r\n%s\r\n%s",
                      status, strlen(body), extra_headers, body);
    assert_true(rc > 0);
    return text;
}

static void test_lists_page_sends_bearer_and_parses(void **state)
{
    char *response = http_response(200, "", DOC_LIST_PAGE);
    struct canned s;
    canned_start(&s, response);
    struct ccapi *c = client_for(&s, 2000);
    struct ccapi_list_page page;
    struct ccapi_error err;
    assert_int_equal(ccapi_lists_page(c, NULL, &page, &err), 0);
    canned_stop(&s);
    assert_non_null(strstr(s.request, "GET /v3/contact_lists?limit=500&status=all&"
                                      "include_membership_count=all HTTP/1.1\r\n"));
    assert_non_null(strstr(s.request, "Authorization: Bearer access-token-SECRET-123\r\n"));
    assert_non_null(strstr(s.request, "Accept: application/json\r\n"));
    assert_int_equal(page.n_lists, 2);
    ccapi_list_page_clear(&page);
    ccapi_free(c);
    free(response);
}

static void test_next_page_follows_the_href(void **state)
{
    char *response = http_response(200, "", "{\"contacts\":[]}");
    struct canned s;
    canned_start(&s, response);
    struct ccapi *c = client_for(&s, 2000);
    struct ccapi_contact_page page;
    struct ccapi_error err;
    assert_int_equal(
        ccapi_contacts_page(c, NULL, 0, NULL, "/v3/contacts?cursor=abc%3D", &page, &err), 0);
    canned_stop(&s);
    assert_non_null(strstr(s.request, "GET /v3/contacts?cursor=abc%3D HTTP/1.1\r\n"));
    ccapi_contact_page_clear(&page);
    ccapi_free(c);
    free(response);
}

static void test_contacts_page_query(void **state)
{
    char *response = http_response(200, "", DOC_CONTACT_PAGE);
    struct canned s;
    canned_start(&s, response);
    struct ccapi *c = client_for(&s, 2000);
    const char *lists[] = {"l-1", "l-2"};
    struct ccapi_contact_page page;
    struct ccapi_error err;
    assert_int_equal(ccapi_contacts_page(c, lists, 2, "2026-11-27T10:00:00Z", NULL, &page, &err),
                     0);
    canned_stop(&s);
    assert_non_null(strstr(s.request, "GET /v3/contacts?lists=l-1,l-2&status=all&include="
                                      "list_memberships&limit=500&updated_after="
                                      "2026-11-27T10%3A00%3A00Z HTTP/1.1\r\n"));
    assert_int_equal(page.n_contacts, 2);
    ccapi_contact_page_clear(&page);
    ccapi_free(c);
    free(response);
}

static void test_find_contact_by_email_encodes_it(void **state)
{
    char *response = http_response(200, "", "{\"contacts\":[]}");
    struct canned s;
    canned_start(&s, response);
    struct ccapi *c = client_for(&s, 2000);
    struct ccapi_contact_page page;
    struct ccapi_error err;
    assert_int_equal(ccapi_contacts_find_by_email(c, "jo+x@example.com", &page, &err), 0);
    canned_stop(&s);
    assert_non_null(strstr(s.request, "GET /v3/contacts?email=jo%2Bx%40example.com&status=all&"
                                      "include=list_memberships HTTP/1.1\r\n"));
    ccapi_contact_page_clear(&page);
    ccapi_free(c);
    free(response);
}

static void test_import_posts_the_body_and_returns_the_activity(void **state)
{
    char *response = http_response(201, "", DOC_IMPORT_201);
    struct canned s;
    canned_start(&s, response);
    struct ccapi *c = client_for(&s, 2000);
    const struct ccapi_import_contact contacts[] = {{"a@example.com", "A", "B"}};
    const char *lists[] = {"l-1"};
    char activity_id[CCAPI_ID_SIZE];
    struct ccapi_error err;
    assert_int_equal(ccapi_contacts_import(c, contacts, 1, lists, 1, activity_id, &err), 0);
    canned_stop(&s);
    assert_string_equal(activity_id, "86b90820-cc52-11ea-9dad-fa163e3d9194");
    assert_non_null(strstr(s.request, "POST /v3/activities/contacts_json_import HTTP/1.1\r\n"));
    assert_non_null(strstr(s.request, "Content-Type: application/json\r\n"));
    char *body = ccapi_import_body(contacts, 1, lists, 1, NULL);
    assert_non_null(strstr(s.request, "\r\n\r\n"));
    assert_string_equal(strstr(s.request, "\r\n\r\n") + 4, body);
    free(body);
    ccapi_free(c);
    free(response);
}

static void test_create_list_conflict(void **state)
{
    char *response = http_response(
        409, "", "[{\"error_key\":\"conflict\",\"error_message\":\"Name already exists\"}]");
    struct canned s;
    canned_start(&s, response);
    struct ccapi *c = client_for(&s, 2000);
    struct ccapi_list list;
    struct ccapi_error err;
    assert_int_equal(ccapi_list_create(c, "Members", "synced by ccsync", &list, &err), -1);
    canned_stop(&s);
    assert_int_equal(err.status, CCAPI_CONFLICT);
    assert_int_equal(err.http_status, 409);
    assert_null(list.name);
    assert_string_equal(strstr(s.request, "\r\n\r\n") + 4,
                        "{\"name\":\"Members\",\"favorite\":false,"
                        "\"description\":\"synced by ccsync\"}");
    ccapi_free(c);
    free(response);
}

static void test_delete_list_returns_activity(void **state)
{
    char *response = http_response(202, "", DOC_DELETE_LIST_202);
    struct canned s;
    canned_start(&s, response);
    struct ccapi *c = client_for(&s, 2000);
    char activity_id[CCAPI_ID_SIZE];
    struct ccapi_error err;
    assert_int_equal(
        ccapi_list_delete(c, "06526938-56dd-11e9-932a-fa163ea075fa", activity_id, &err), 0);
    canned_stop(&s);
    assert_non_null(
        strstr(s.request, "DELETE /v3/contact_lists/06526938-56dd-11e9-932a-fa163ea075fa HTTP"));
    assert_string_equal(activity_id, "046b6c7f-0b8a-43b9-b35d-6489e6daee91");
    ccapi_free(c);
    free(response);
}

static void test_429_reports_retry_after(void **state)
{
    char *response =
        http_response(429, "Retry-After: 7\r\n",
                      "{\"error_key\":\"throttled\",\"error_message\":\"Too many requests\"}");
    struct canned s;
    canned_start(&s, response);
    struct ccapi *c = client_for(&s, 2000);
    struct ccapi_activity a;
    struct ccapi_error err;
    assert_int_equal(ccapi_activity_get(c, "a-1", &a, &err), -1);
    canned_stop(&s);
    assert_int_equal(err.status, CCAPI_THROTTLED);
    assert_int_equal(err.retry_after_s, 7);
    assert_false(err.maybe_applied);
    ccapi_free(c);
    free(response);
}

static void test_error_message_never_holds_the_token(void **state)
{
    char *response = http_response(401, "",
                                   "{\"error_key\":\"unauthorized\",\"error_message\":"
                                   "\"Token access-token-SECRET-123 is expired\"}");
    struct canned s;
    canned_start(&s, response);
    struct ccapi *c = client_for(&s, 2000);
    struct ccapi_list list;
    struct ccapi_error err;
    assert_int_equal(ccapi_list_get(c, "l-1", &list, &err), -1);
    canned_stop(&s);
    assert_int_equal(err.status, CCAPI_UNAUTHORIZED);
    assert_null(strstr(err.message, "SECRET"));
    assert_string_equal(err.message, "HTTP 401: Token [redacted] is expired");
    ccapi_free(c);
    free(response);
}

static void test_unreadable_2xx_body_is_transient_and_maybe_applied(void **state)
{
    char *response = http_response(201, "", "{\"state\":\"initialized\"}");
    struct canned s;
    canned_start(&s, response);
    struct ccapi *c = client_for(&s, 2000);
    const char *ids[] = {"c-1"};
    char activity_id[CCAPI_ID_SIZE];
    struct ccapi_error err;
    assert_int_equal(ccapi_memberships_remove(c, ids, 1, ids, 1, activity_id, &err), -1);
    canned_stop(&s);
    assert_non_null(strstr(s.request, "POST /v3/activities/remove_list_memberships HTTP"));
    assert_int_equal(err.status, CCAPI_TRANSIENT);
    assert_string_equal(err.error_key, "bad_response");
    assert_int_equal(err.http_status, 201);
    assert_true(err.maybe_applied);
    ccapi_free(c);
    free(response);
}

static void test_timeout_after_sending_may_have_applied(void **state)
{
    struct canned s;
    canned_start(&s, NULL);
    struct ccapi *c = client_for(&s, 300);
    const char *ids[] = {"c-1"};
    char activity_id[CCAPI_ID_SIZE];
    struct ccapi_error err;
    assert_int_equal(ccapi_memberships_add(c, ids, 1, ids, 1, activity_id, &err), -1);
    canned_stop(&s);
    assert_non_null(strstr(s.request, "POST /v3/activities/add_list_memberships HTTP"));
    assert_int_equal(err.status, CCAPI_TRANSIENT);
    assert_string_equal(err.error_key, "timeout");
    assert_int_equal(err.http_status, 0);
    assert_true(err.maybe_applied);
    assert_int_equal(err.curl_code, CURLE_OPERATION_TIMEDOUT);
    ccapi_free(c);
}

static void test_connection_refused_was_not_applied(void **state)
{
    /* a port that was free a moment ago and has no listener */
    int port = ts_free_port();
    assert_true(port > 0);
    char base[64];
    snprintf(base, sizeof(base), "http://127.0.0.1:%d/v3", port);
    struct ccapi *c = ccapi_new(base, 1000);
    ccapi_set_token(c, "tok");
    struct ccapi_list_page page;
    struct ccapi_error err;
    assert_int_equal(ccapi_lists_page(c, NULL, &page, &err), -1);
    assert_int_equal(err.status, CCAPI_TRANSIENT);
    assert_string_equal(err.error_key, "connect_failed");
    assert_false(err.maybe_applied);
    ccapi_free(c);
}

static void test_refused_before_sending(void **state)
{
    /* nothing listens on port 9: none of these may reach the network */
    struct ccapi *c = ccapi_new("http://127.0.0.1:9/v3", 1000);
    char activity_id[CCAPI_ID_SIZE];
    struct ccapi_error err;
    const char *lists[] = {"l-1"};
    struct ccapi_list_page page;

    assert_int_equal(ccapi_lists_page(c, NULL, &page, &err), -1);
    assert_int_equal(err.status, CCAPI_UNAUTHORIZED);
    assert_string_equal(err.error_key, "no_token");

    ccapi_set_token(c, "tok");
    const struct ccapi_import_contact one = {"a@example.com", NULL, NULL};
    assert_int_equal(ccapi_contacts_import(c, &one, 1, lists, 0, activity_id, &err), -1);
    assert_int_equal(err.status, CCAPI_PERMANENT);
    assert_string_equal(err.error_key, "bad_request");

    size_t n = CCAPI_IMPORT_MAX_CONTACTS + 1;
    struct ccapi_import_contact *many = calloc(n, sizeof(*many));
    for (size_t i = 0; i < n; i++)
        many[i] = one;
    assert_int_equal(ccapi_contacts_import(c, many, n, lists, 1, activity_id, &err), -1);
    assert_string_equal(err.error_key, "request_too_large");

    /* under 40,000 contacts but 4 MB of JSON */
    char big[200];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    for (size_t i = 0; i < 20000; i++)
        many[i] = (struct ccapi_import_contact){"a@example.com", big, big};
    assert_int_equal(ccapi_contacts_import(c, many, 20000, lists, 1, activity_id, &err), -1);
    assert_string_equal(err.error_key, "request_too_large");
    assert_false(err.maybe_applied);
    free(many);

    const char *ids[501];
    for (size_t i = 0; i < 501; i++)
        ids[i] = "c";
    assert_int_equal(ccapi_memberships_remove(c, ids, 501, lists, 1, activity_id, &err), -1);
    assert_string_equal(err.error_key, "bad_request");

    assert_int_equal(ccapi_lists_page(c, "https://elsewhere.example/v3/x", &page, &err), -1);
    assert_int_equal(err.status, CCAPI_PERMANENT);
    ccapi_free(c);
}

static void test_token_refresh_confidential_uses_basic_auth(void **state)
{
    char *response =
        http_response(200, "",
                      "{\"access_token\":\"new-access\",\"refresh_token\":"
                      "\"new-refresh\",\"expires_in\":86400,\"token_type\":\"Bearer\"}");
    struct canned s;
    canned_start(&s, response);
    struct ccapi *c = client_for(&s, 2000);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/oauth2/default/v1/token", s.port);
    struct ccapi_token t;
    struct ccapi_error err;
    assert_int_equal(ccapi_token_refresh(c, url, "cid", "csecret", "old-refresh", &t, &err), 0);
    canned_stop(&s);
    assert_non_null(strstr(s.request, "POST /oauth2/default/v1/token HTTP/1.1\r\n"));
    /* base64("cid:csecret") */
    assert_non_null(strstr(s.request, "Authorization: Basic Y2lkOmNzZWNyZXQ=\r\n"));
    assert_non_null(strstr(s.request, "Content-Type: application/x-www-form-urlencoded\r\n"));
    assert_string_equal(strstr(s.request, "\r\n\r\n") + 4,
                        "grant_type=refresh_token&refresh_token=old-refresh");
    assert_null(strstr(s.request, "Bearer"));
    assert_string_equal(t.access_token, "new-access");
    assert_string_equal(t.refresh_token, "new-refresh");
    assert_int_equal(t.expires_in, 86400);
    ccapi_token_clear(&t);
    ccapi_free(c);
    free(response);
}

static void test_token_refresh_pkce_sends_client_id_and_reports_invalid_grant(void **state)
{
    char *response = http_response(400, "",
                                   "{\"error\":\"invalid_grant\",\"error_description\":"
                                   "\"The refresh token old-refresh-0123 is invalid.\"}");
    struct canned s;
    canned_start(&s, response);
    struct ccapi *c = client_for(&s, 2000);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/token", s.port);
    struct ccapi_token t;
    struct ccapi_error err;
    assert_int_equal(ccapi_token_refresh(c, url, "cid", NULL, "old-refresh-0123", &t, &err), -1);
    canned_stop(&s);
    assert_null(strstr(s.request, "Authorization:"));
    assert_string_equal(strstr(s.request, "\r\n\r\n") + 4,
                        "grant_type=refresh_token&refresh_token=old-refresh-0123&client_id=cid");
    assert_int_equal(err.status, CCAPI_UNAUTHORIZED);
    assert_string_equal(err.error_key, "invalid_grant");
    assert_null(strstr(err.message, "old-refresh-0123"));
    assert_null(t.access_token);
    ccapi_free(c);
    free(response);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify_400_array_is_permanent_with_key_and_message),
        cmocka_unit_test(test_classify_404_and_409_arrays),
        cmocka_unit_test(test_classify_401_object_is_unauthorized),
        cmocka_unit_test(test_classify_429_throttled_keeps_retry_after),
        cmocka_unit_test(test_classify_429_quota_exceeded_is_quota),
        cmocka_unit_test(test_classify_429_without_body_is_throttled),
        cmocka_unit_test(test_classify_5xx_is_transient_and_maybe_applied),
        cmocka_unit_test(test_classify_other_4xx_is_permanent),
        cmocka_unit_test(test_classify_2xx_is_ok),
        cmocka_unit_test(test_classify_long_message_is_truncated),
        cmocka_unit_test(test_classify_token_invalid_grant_is_unauthorized),
        cmocka_unit_test(test_status_names),
        cmocka_unit_test(test_join_next_href_replaces_v3_with_base),
        cmocka_unit_test(test_join_other_paths_use_the_origin),
        cmocka_unit_test(test_join_refuses_other_hosts_and_relative_paths),
        cmocka_unit_test(test_parse_doc_list_page),
        cmocka_unit_test(test_parse_list_page_last_page_and_status),
        cmocka_unit_test(test_parse_list_page_malformed),
        cmocka_unit_test(test_parse_doc_single_list),
        cmocka_unit_test(test_parse_activity_ids_of_doc_bodies),
        cmocka_unit_test(test_parse_doc_activity),
        cmocka_unit_test(test_parse_activity_errors_name_their_email),
        cmocka_unit_test(test_activity_states),
        cmocka_unit_test(test_parse_doc_activity_page),
        cmocka_unit_test(test_email_in_message),
        cmocka_unit_test(test_parse_doc_contact_page),
        cmocka_unit_test(test_parse_contact_page_minimal_contacts),
        cmocka_unit_test(test_parse_contact_page_malformed),
        cmocka_unit_test(test_parse_token_response),
        cmocka_unit_test(test_refresh_body_is_form_encoded),
        cmocka_unit_test(test_import_body_matches_the_doc_schema),
        cmocka_unit_test(test_import_size_estimate_is_exact_for_awkward_strings),
        cmocka_unit_test(test_import_size_of_a_full_chunk_stays_under_4mb),
        cmocka_unit_test(test_memberships_body),
        cmocka_unit_test(test_lists_page_sends_bearer_and_parses),
        cmocka_unit_test(test_next_page_follows_the_href),
        cmocka_unit_test(test_contacts_page_query),
        cmocka_unit_test(test_find_contact_by_email_encodes_it),
        cmocka_unit_test(test_import_posts_the_body_and_returns_the_activity),
        cmocka_unit_test(test_create_list_conflict),
        cmocka_unit_test(test_delete_list_returns_activity),
        cmocka_unit_test(test_429_reports_retry_after),
        cmocka_unit_test(test_error_message_never_holds_the_token),
        cmocka_unit_test(test_unreadable_2xx_body_is_transient_and_maybe_applied),
        cmocka_unit_test(test_timeout_after_sending_may_have_applied),
        cmocka_unit_test(test_connection_refused_was_not_applied),
        cmocka_unit_test(test_refused_before_sending),
        cmocka_unit_test(test_token_refresh_confidential_uses_basic_auth),
        cmocka_unit_test(test_token_refresh_pkce_sends_client_id_and_reports_invalid_grant),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return failed;
}
